// SPDX-License-Identifier: GPL-2.0
/*
 * ringcount: the yardstick consumer. Attaches ringcount.bpf.o's programs to the
 * listed skb tracepoints and counts the ring buffer's records with
 * ring_buffer__poll(), doing nothing else with them.
 *
 *   ringcount [-n NETNS_INODE] [-r RINGBUF_MB] [-c] TRACEPOINT_LIST
 *
 *   -n  only skbs of this network namespace (pwru's --filter-netns)
 *   -r  ring buffer size in MiB (default 16, pwru's default)
 *   -c  count the events offered, reserve nothing (no ring buffer reader)
 *
 * stdout: "ready <tracepoints> <attach_s>", then every 0.05 s
 * "sample <consumed> <reserve_failed> <offered> <monotonic_s>", and after
 * SIGINT/SIGTERM (detach, drain what is left) "total <consumed> <reserve_failed>
 * <offered> <seconds since ready>".
 */
#include <signal.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "tplist.h"

#define SAMPLE_EVERY_S 0.05

static volatile sig_atomic_t stopping;
static unsigned long long consumed;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static int on_record(void *ctx, void *data, size_t size)
{
	(void)ctx, (void)data, (void)size;
	consumed++;
	return 0;
}

/* Sum of one per-CPU counter. */
static unsigned long long counter(int fd, unsigned int key)
{
	static unsigned long long values[1024];
	unsigned long long sum = 0;
	int cpus = libbpf_num_possible_cpus(), i;

	if (cpus > 1024 || bpf_map_lookup_elem(fd, &key, values))
		die("ringcount: cannot read counter %u", key);
	for (i = 0; i < cpus; i++)
		sum += values[i];
	return sum;
}

static struct bpf_object *open_object(unsigned int netns, unsigned int count_only, int mb)
{
	struct { unsigned int netns, count_only; } cfg = { netns, count_only };
	char path[PATH_MAX];
	struct bpf_object *obj;
	struct bpf_map *map;

	beside_exe(path, sizeof(path), "ringcount.bpf.o");
	obj = bpf_object__open_file(path, NULL);
	if (!obj)
		die("ringcount: cannot open %s: %s", path, strerror(errno));
	bpf_object__for_each_map(map, obj) {
		if (strstr(bpf_map__name(map), ".rodata") &&
		    bpf_map__set_initial_value(map, &cfg, sizeof(cfg)))
			die("ringcount: cannot set the configuration");
	}
	map = bpf_object__find_map_by_name(obj, "events");
	if (!map || bpf_map__set_max_entries(map, mb << 20))
		die("ringcount: cannot size the ring buffer");
	if (bpf_object__load(obj))
		die("ringcount: load failed: %s", strerror(errno));
	return obj;
}

static int attach(struct bpf_object *obj, const char *list, struct bpf_link **links)
{
	static struct attach_point points[MAX_ENTRIES];
	int n = read_points(list, points, 0), i;

	for (i = 0; i < n; i++) {
		char prog_name[64];
		struct bpf_program *prog;

		snprintf(prog_name, sizeof(prog_name), "ringcount_skb%d", points[i].position);
		prog = bpf_object__find_program_by_name(obj, prog_name);
		if (!prog)
			die("ringcount: no program for sk_buff position %d", points[i].position);
		links[i] = bpf_program__attach_raw_tracepoint(prog, points[i].name);
		if (!links[i])
			die("ringcount: attach %s: %s", points[i].name, strerror(errno));
	}
	return n;
}

static void report(const char *what, struct bpf_object *obj)
{
	int fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "counters"));

	printf("%s %llu %llu %llu", what, consumed, counter(fd, 1), counter(fd, 0));
}

int main(int argc, char **argv)
{
	static struct bpf_link *links[MAX_ENTRIES];
	unsigned int netns = 0, count_only = 0;
	struct ring_buffer *rb = NULL;
	struct bpf_object *obj;
	double started, ready, next;
	int mb = 16, opt, n, i;

	while ((opt = getopt(argc, argv, "n:r:c")) != -1) {
		if (opt == 'n')
			netns = strtoul(optarg, NULL, 0);
		else if (opt == 'r')
			mb = atoi(optarg);
		else if (opt == 'c')
			count_only = 1;
		else
			die("usage: ringcount [-n NETNS_INODE] [-r RINGBUF_MB] [-c] TRACEPOINT_LIST");
	}
	if (optind != argc - 1)
		die("usage: ringcount [-n NETNS_INODE] [-r RINGBUF_MB] [-c] TRACEPOINT_LIST");
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);
	obj = open_object(netns, count_only, mb);
	if (!count_only) {
		rb = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "events")),
				      on_record, NULL, NULL);
		if (!rb)
			die("ringcount: ring buffer reader: %s", strerror(errno));
	}
	started = mono_now();
	n = attach(obj, argv[optind], links);
	ready = mono_now();
	printf("ready %d %.3f\n", n, ready - started);
	for (next = ready; !stopping;) {
		int got = rb ? ring_buffer__poll(rb, 100) : usleep(100000);

		if (got < 0 && got != -EINTR && errno != EINTR)
			die("ringcount: poll: %d", got);
		if (mono_now() >= next) {
			report("sample", obj);
			printf(" %.6f\n", mono_now());
			next += SAMPLE_EVERY_S;
		}
	}
	for (i = 0; i < n; i++)
		bpf_link__destroy(links[i]);
	if (rb) {
		ring_buffer__consume(rb);
		ring_buffer__free(rb);
	}
	report("total", obj);
	printf(" %.6f\n", mono_now() - ready);
	bpf_object__close(obj);
	return 0;
}
