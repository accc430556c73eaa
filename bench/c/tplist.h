/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reading the attach lists the Python harness (bench/) writes for the loaders:
 *   tracepoints: "<name> <position of the sk_buff argument>" per line
 *   functions:   "<hex address> <name>" per line (kprobe-multi / kprobe by address)
 */
#ifndef BENCH_TPLIST_H
#define BENCH_TPLIST_H

#include "common.h"

#define MAX_ENTRIES 8192

struct attach_point {
	char name[128];
	unsigned long addr;  /* functions */
	int position;        /* tracepoints */
};

/* Reads up to MAX_ENTRIES points from path; returns how many (exits on errors). */
static inline int read_points(const char *path, struct attach_point *points, int functions)
{
	char line[256];
	FILE *f = fopen(path, "r");
	int n = 0;

	if (!f)
		die("cannot read %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		struct attach_point *p = &points[n];
		int ok;

		if (line[0] == '\n' || line[0] == '#')
			continue;
		if (n == MAX_ENTRIES)
			die("%s: more than %d entries", path, MAX_ENTRIES);
		if (functions)
			ok = sscanf(line, "%lx %127s", &p->addr, p->name) == 2;
		else
			ok = sscanf(line, "%127s %d", p->name, &p->position) == 2;
		if (!ok)
			die("%s: bad line: %s", path, line);
		n++;
	}
	fclose(f);
	return n;
}

#endif
