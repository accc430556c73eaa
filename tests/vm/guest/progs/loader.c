// SPDX-License-Identifier: GPL-2.0
/*
 * tests/vm probe loader, built on the host against the system libbpf (1.1 on bookworm)
 * and run inside the guest (it sees the host's /usr/lib).
 *
 *   loader OBJ DADDR DPORT [IFINDEX]
 *
 * Opens and loads OBJ (one of the *.bpf.o next to this file), writes the flow to match
 * into its "cfg" map, auto-attaches every program by its SEC() name, then serves
 * stdin: for each line read it prints "COUNT all=<n> match=<m>"; exits 0 at EOF.
 * Everything the caller parses goes to stdout, one line each:
 *   ATTACHED prog=<name> sec=<section>
 *   LOAD_FAILED errno=<n> msg=<strerror>          (exit 3)
 *   ATTACH_FAILED errno=<n> msg=<strerror> ...    (exit 4)
 * libbpf's warnings go to stderr (and its debug output too with LIBBPF_DEBUG=1).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

struct ipcount_cfg {
	__u32 daddr;
	__u32 dport;
	__u32 ifindex;
	__u32 pad;
};

static int print_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG && !getenv("LIBBPF_DEBUG"))
		return 0;
	return vfprintf(stderr, fmt, args);
}

static __u64 count(int fd, __u32 idx)
{
	__u64 v = 0;

	if (bpf_map_lookup_elem(fd, &idx, &v))
		return (__u64)-1;
	return v;
}

int main(int argc, char **argv)
{
	struct ipcount_cfg cfg = {0};
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_map *cfg_map, *counts;
	struct in_addr addr;
	char line[256];
	__u32 zero = 0;
	int err;

	if (argc < 4 || argc > 5 || inet_pton(AF_INET, argv[2], &addr) != 1) {
		fprintf(stderr, "usage: %s OBJ DADDR DPORT [IFINDEX]\n", argv[0]);
		return 2;
	}
	cfg.daddr = addr.s_addr;
	cfg.dport = htons((unsigned short)atoi(argv[3]));
	cfg.ifindex = argc > 4 ? (unsigned int)atoi(argv[4]) : 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(print_fn);

	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		err = errno;
		printf("LOAD_FAILED errno=%d msg=%s (open %s)\n", err, strerror(err), argv[1]);
		return 3;
	}
	err = bpf_object__load(obj);
	if (err) {
		printf("LOAD_FAILED errno=%d msg=%s\n", -err, strerror(-err));
		return 3;
	}
	cfg_map = bpf_object__find_map_by_name(obj, "cfg");
	counts = bpf_object__find_map_by_name(obj, "counts");
	if (!cfg_map || !counts ||
	    bpf_map_update_elem(bpf_map__fd(cfg_map), &zero, &cfg, BPF_ANY)) {
		printf("LOAD_FAILED errno=%d msg=cannot set up maps cfg/counts\n", errno);
		return 3;
	}
	bpf_object__for_each_program(prog, obj) {
		struct bpf_link *link = bpf_program__attach(prog);

		if (!link) {
			err = errno;
			printf("ATTACH_FAILED errno=%d msg=%s prog=%s sec=%s\n", err, strerror(err),
			       bpf_program__name(prog), bpf_program__section_name(prog));
			return 4;
		}
		printf("ATTACHED prog=%s sec=%s\n", bpf_program__name(prog),
		       bpf_program__section_name(prog));
	}
	printf("READY\n");
	while (fgets(line, sizeof(line), stdin))
		printf("COUNT all=%llu match=%llu\n",
		       (unsigned long long)count(bpf_map__fd(counts), 0),
		       (unsigned long long)count(bpf_map__fd(counts), 1));
	bpf_object__close(obj);
	return 0;
}
