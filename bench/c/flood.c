// SPDX-License-Identifier: GPL-2.0
/*
 * flood: UDP datagrams to one address, as fast as sendmmsg() goes or at a cap.
 *
 *   flood DST_IPV4 PORT SECONDS [PACKETS_PER_SECOND]
 *
 * Sends 64-byte datagrams in batches of 64 from the current network namespace
 * (run it under `ip netns exec`) and prints "<sent> <seconds> <cpu_seconds>" at
 * the end: cpu_seconds is its own user + system time, which includes the receive
 * path the veth pair runs in the sender's softirq context (and any BPF program
 * attached there) whenever the kernel does not hand that work to ksoftirqd.
 * A cap of 0 (the default) means no cap. With a cap, the sender sleeps until the
 * next batch is due, so the rate holds over the whole run, not just on average.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include "common.h"

#define BATCH 64
#define PAYLOAD 64

static void sleep_until(double when)
{
	struct timespec ts = { (time_t)when, (long)((when - (time_t)when) * 1e9) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

int main(int argc, char **argv)
{
	static char payload[PAYLOAD];
	struct sockaddr_in dst = { .sin_family = AF_INET };
	struct mmsghdr msgs[BATCH];
	struct iovec iov = { payload, sizeof(payload) };
	struct rusage usage;
	unsigned long long sent = 0;
	double seconds, rate, start, end, now;
	int fd, i, n;

	if (argc < 4 || argc > 5)
		die("usage: flood DST_IPV4 PORT SECONDS [PACKETS_PER_SECOND]");
	if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1)
		die("flood: not an IPv4 address: %s", argv[1]);
	dst.sin_port = htons(atoi(argv[2]));
	seconds = atof(argv[3]);
	rate = argc == 5 ? atof(argv[4]) : 0;
	memset(payload, 'x', sizeof(payload));
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_name = &dst;
		msgs[i].msg_hdr.msg_namelen = sizeof(dst);
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		die("flood: socket: %s", strerror(errno));
	start = mono_now();
	end = start + seconds;
	while ((now = mono_now()) < end) {
		if (rate > 0 && sent >= rate * (now - start)) {
			sleep_until(start + sent / rate);
			continue;
		}
		n = sendmmsg(fd, msgs, BATCH, 0);
		if (n < 0 && errno != EINTR && errno != ENOBUFS)
			die("flood: sendmmsg: %s", strerror(errno));
		if (n > 0)
			sent += n;
	}
	now = mono_now() - start;
	getrusage(RUSAGE_SELF, &usage);
	printf("%llu %.6f %.6f\n", sent, now,
	       usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
	       usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6);
	return 0;
}
