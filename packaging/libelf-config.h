/* config.h for building elfutils' libelf alone (packaging/build-libbpf.sh).
 *
 * elfutils' configure checks the whole tool suite (argp, fts, obstack,
 * debuginfod, ...) and runs test programs, which a cross build cannot; libelf
 * itself needs only these answers, all true for glibc >= 2.28 with clang.
 * No USE_LOCKS (libbpf opens objects from one thread), no zstd: zlib only.
 */
#define HAVE_DECL_MEMPCPY 1
#define HAVE_DECL_MEMRCHR 1
#define HAVE_DECL_POWEROF2 1
#define HAVE_DECL_RAWMEMCHR 1
#define HAVE_DECL_REALLOCARRAY 1
#define HAVE_ERROR_H 1
#define HAVE_ERR_H 1
#define HAVE_FALLTHROUGH 1
#define HAVE_GCC_STRUCT 1
#define HAVE_MREMAP 1
#define HAVE_STDATOMIC_H 1
#define HAVE_VISIBILITY 1
#define PACKAGE_NAME "elfutils"
#define PACKAGE_VERSION ELFUTILS_VERSION
#include <eu-config.h>
