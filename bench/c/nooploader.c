// SPDX-License-Identifier: GPL-2.0
/*
 * nooploader: attach a no-op program where pwru would attach its own (the floor
 * every ratio of the overhead benchmarks is measured against).
 *
 *   nooploader tp TRACEPOINT_LIST            noop.bpf.o on each skb tracepoint
 *   nooploader kprobe-multi FUNCTION_LIST    noop_kmulti.bpf.o, one kprobe-multi link
 *   nooploader kprobe [-j N] FUNCTION_LIST   one kprobe per address, N threads (10)
 *
 * stdout: "ready <attached> <attach_s>" once attached; after SIGINT/SIGTERM,
 * "detached <seconds>". Detaching kprobes one by one waits for the kernel each
 * time, so kprobe mode detaches (and attaches) with N threads, as pwru's
 * --filter-kprobe-batch does.
 */
#include <pthread.h>
#include <signal.h>
#include <bpf/libbpf.h>
#include "tplist.h"

static struct attach_point points[MAX_ENTRIES];
static struct bpf_link *links[MAX_ENTRIES];

struct stripe {
	struct bpf_program *prog;
	int first, step, count, attach;
};

/* Attach (or destroy) every step-th kprobe from first on. */
static void *kprobe_stripe(void *arg)
{
	struct stripe *s = arg;
	int i;

	for (i = s->first; i < s->count; i += s->step) {
		if (!s->attach) {
			bpf_link__destroy(links[i]);
			continue;
		}
		LIBBPF_OPTS(bpf_kprobe_opts, opts, .offset = points[i].addr);
		links[i] = bpf_program__attach_kprobe_opts(s->prog, NULL, &opts);
		if (!links[i])
			die("nooploader: kprobe at %lx (%s): %s", points[i].addr, points[i].name,
			    strerror(errno));
	}
	return NULL;
}

static void kprobes_in_threads(struct bpf_program *prog, int n, int threads, int attach)
{
	pthread_t tids[64];
	struct stripe stripes[64];
	int t;

	threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
	for (t = 0; t < threads; t++) {
		stripes[t] = (struct stripe){ prog, t, threads, n, attach };
		if (pthread_create(&tids[t], NULL, kprobe_stripe, &stripes[t]))
			die("nooploader: pthread_create failed");
	}
	for (t = 0; t < threads; t++)
		pthread_join(tids[t], NULL);
}

static struct bpf_object *load(const char *file, const char *keep)
{
	struct bpf_program *prog;
	struct bpf_object *obj;
	char path[PATH_MAX];

	beside_exe(path, sizeof(path), file);
	obj = bpf_object__open_file(path, NULL);
	if (!obj)
		die("nooploader: cannot open %s: %s", path, strerror(errno));
	bpf_object__for_each_program(prog, obj)
		bpf_program__set_autoload(prog, !strcmp(bpf_program__name(prog), keep));
	if (bpf_object__load(obj))
		die("nooploader: load %s failed: %s", file, strerror(errno));
	return obj;
}

/* Attaches; returns how many links to destroy at the end, *attached the points covered. */
static int attach(const char *mode, const char *list, int threads, int *attached)
{
	unsigned long addrs[MAX_ENTRIES];
	struct bpf_program *prog;
	int tp = !strcmp(mode, "tp"), n = read_points(list, points, !tp), i;

	*attached = n;

	if (tp) {
		prog = bpf_object__find_program_by_name(load("noop.bpf.o", "noop_tp"), "noop_tp");
		for (i = 0; i < n; i++)
			if (!(links[i] = bpf_program__attach_raw_tracepoint(prog, points[i].name)))
				die("nooploader: attach %s: %s", points[i].name, strerror(errno));
		return n;
	}
	if (!strcmp(mode, "kprobe-multi")) {
		LIBBPF_OPTS(bpf_kprobe_multi_opts, opts, .addrs = addrs, .cnt = n);
		for (i = 0; i < n; i++)
			addrs[i] = points[i].addr;
		prog = bpf_object__find_program_by_name(load("noop_kmulti.bpf.o", "noop_kmulti"),
							"noop_kmulti");
		if (!(links[0] = bpf_program__attach_kprobe_multi_opts(prog, NULL, &opts)))
			die("nooploader: kprobe-multi over %d functions: %s", n, strerror(errno));
		return 1;
	}
	if (!strcmp(mode, "kprobe")) {
		raise_fd_limit();
		prog = bpf_object__find_program_by_name(load("noop_kmulti.bpf.o", "noop_kprobe"),
							"noop_kprobe");
		kprobes_in_threads(prog, n, threads, 1);
		return n;
	}
	die("nooploader: unknown mode %s (tp, kprobe-multi, kprobe)", mode);
	return 0;
}

int main(int argc, char **argv)
{
	int threads = 10, opt, links_held, sig, i, attached;
	const char *usage = "usage: nooploader tp|kprobe-multi|kprobe [-j THREADS] LIST";
	double started;
	sigset_t stop;

	if (argc < 3)
		die(usage);
	optind = 2;
	while ((opt = getopt(argc, argv, "j:")) != -1) {
		if (opt != 'j')
			die(usage);
		threads = atoi(optarg);
	}
	if (optind != argc - 1)
		die(usage);
	/* blocked before any thread starts, so only sigwait() below sees them */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	started = mono_now();
	links_held = attach(argv[1], argv[optind], threads, &attached);
	printf("ready %d %.3f\n", attached, mono_now() - started);
	sigwait(&stop, &sig);
	started = mono_now();
	if (!strcmp(argv[1], "kprobe"))
		kprobes_in_threads(NULL, links_held, threads, 0);
	else
		for (i = 0; i < links_held; i++)
			bpf_link__destroy(links[i]);
	printf("detached %.3f\n", mono_now() - started);
	return 0;
}
