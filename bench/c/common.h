/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Small helpers shared by the benchmark's C tools (flood, ringcount, nooploader).
 *
 * The tools talk to the Python harness (bench/) through stdout, one line per fact:
 *   "ready <attached> <attach_seconds>"   programs are attached, measuring may start
 *   "detached <seconds>"                  everything was detached
 * Times are CLOCK_MONOTONIC, the clock Python's time.monotonic() reads.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static inline double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* Path of a file next to this executable (the .bpf.o objects are built there). */
static inline void beside_exe(char *out, size_t size, const char *name)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n < 0)
		die("readlink /proc/self/exe: %s", strerror(errno));
	exe[n] = 0;
	snprintf(out, size, "%s/%s", dirname(exe), name);
}

/* One kprobe holds a perf event fd and a link fd: 1024 fds cover ~500 functions. */
static inline void raise_fd_limit(void)
{
	struct rlimit lim = { 1 << 16, 1 << 16 };

	if (setrlimit(RLIMIT_NOFILE, &lim))
		fprintf(stderr, "warning: cannot raise RLIMIT_NOFILE: %s\n", strerror(errno));
}

#endif
