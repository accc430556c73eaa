/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layouts shared by the BPF programs and the Python control plane.
 *
 * Python declares the same layouts once in pwru/bpf/abi.py (ctypes.Structure);
 * tests/unit/test_abi.py checks both sides agree using the BTF of the built
 * object, so a change here that is not mirrored there fails the unit tests.
 *
 * Every struct is naturally aligned with explicit padding: no __packed, so the
 * verifier and ctypes see the same offsets without surprises.
 */
#ifndef PWRU_H
#define PWRU_H

#define PWRU_TASK_COMM_LEN 16
#define PWRU_MAX_SKB_METADATA 4

/* Which kind of probe produced an event. */
enum pwru_event_type {
	PWRU_EVENT_KPROBE = 0,
	PWRU_EVENT_KPROBE_MULTI = 1,
	PWRU_EVENT_TC = 2,
	PWRU_EVENT_XDP = 3,
	PWRU_EVENT_TRACEPOINT = 4,
};

/* Bits of pwru_event.flags. */
enum pwru_event_flags {
	PWRU_EVENT_HAS_REASON = 1 << 0,   /* .reason holds an skb_drop_reason (or XDP verdict) */
	PWRU_EVENT_HAS_TUPLE = 1 << 1,    /* .tuple was parsed from the packet */
	PWRU_EVENT_HAS_TUNNEL = 1 << 2,   /* .tunnel_tuple holds the inner packet */
	PWRU_EVENT_HAS_STACK = 1 << 3,    /* stack frames follow the event */
	PWRU_EVENT_FEXIT = 1 << 4,        /* tc/XDP program exit: .reason is its return value */
	PWRU_EVENT_HAS_BPFMAP = 1 << 5,   /* struct pwru_bpfmap ends the record (--output-bpfmap) */
	PWRU_EVENT_HAS_HOOK = 1 << 6,     /* nf_hook_slow: .reason = state->pf << 8 | state->hook */
	PWRU_EVENT_CLONE = 1 << 7,        /* a clone's birth: .skb_addr the new skb, .reason the original */
};

/* An L3/L4 tuple. Addresses and ports in network byte order, as on the wire. */
struct pwru_tuple {
	__u8 saddr[16];      /* IPv4 uses the first 4 bytes */
	__u8 daddr[16];
	__u16 sport;         /* network order */
	__u16 dport;         /* network order */
	__u16 l3_proto;      /* host order: 0x0800, 0x86dd, or 0 when unknown */
	__u8 l4_proto;       /* IPPROTO_* */
	__u8 tcp_flags;      /* TCP header byte 13 */
};                       /* 40 bytes */

/*
 * One record in the "events" ring buffer. When the config asks for them, the
 * record continues after the struct with, in this order:
 *   __u64 stack[config.stack_frames]      kernel stack, innermost first, 0-padded
 *   char skb_text[config.skb_text_len]    bpf_snprintf_btf(struct sk_buff), NUL-ended
 *   char shinfo_text[config.shinfo_text_len]  the same for struct skb_shared_info
 *   __u8 cb[PWRU_SKB_CB_LEN]              skb->cb, with config.output_cb
 *   struct pwru_packet + __u8 data[]      the packet's bytes, with config.capture_bytes:
 *                                         .captured of them valid, capture_bytes long
 *   struct pwru_bpfmap                    only in records flagged PWRU_EVENT_HAS_BPFMAP
 *                                         (a map helper's map, key and value)
 */
struct pwru_event {
	__u64 ts;            /* bpf_ktime_get_ns() */
	__u64 skb_addr;
	__u64 func_ip;       /* probed function address (kprobe*) or 0 */
	__u64 caller_ip;     /* return address into the caller, if asked; drops: always */
	__u64 reason;        /* drop reason, valid with PWRU_EVENT_HAS_REASON */
	__u32 probe_id;      /* index in the control plane's probe table, or
	                      * PWRU_PROBE_BY_ADDR: kprobes without cookies, see func_ip */
	__u32 pid;           /* tgid of the current task */
	__u32 cpu;
	__u32 type;          /* enum pwru_event_type */
	__u32 flags;         /* enum pwru_event_flags */
	__s32 stack_id;      /* id in the stack map, or < 0 */
	/* skb metadata */
	__u32 netns;         /* inode of the skb's network namespace */
	__u32 mark;
	__u32 ifindex;
	__u32 len;
	__u32 mtu;
	__u16 protocol;      /* skb->protocol, network order */
	__u16 _pad0;
	struct pwru_tuple tuple;
	struct pwru_tuple tunnel_tuple;
	__u64 skb_metadata[PWRU_MAX_SKB_METADATA]; /* --output-skb-metadata, or
	                      * --output-xdp-metadata for XDP packets */
	char comm[PWRU_TASK_COMM_LEN];
};

#define PWRU_SKB_CB_LEN 48

/* Link types of captured packet bytes (pwru_packet.link). */
enum pwru_link {
	PWRU_LINK_NONE = 0,       /* nothing captured (no skb, no header set) */
	PWRU_LINK_ETHERNET = 1,   /* data starts at the MAC header */
	PWRU_LINK_RAW_IP = 2,     /* data starts at the network header (IPv4/IPv6) */
};

/* Bits of pwru_packet.flags. */
enum pwru_packet_flags {
	PWRU_PACKET_TRUNCATED = 1 << 0, /* bytes past the linear area were wanted but not copied */
};

/*
 * Packet bytes make records of varying length: such records are built in a
 * scratch buffer of their CPU and nesting level (task, softirq, hardirq, NMI)
 * and copied to the ring with bpf_ringbuf_output(), which takes a length known
 * only at run time. The verifier bounds the offset and the length of each copy
 * of packet bytes by PWRU_CAPTURE_MASK, so a buffer holds the event, its extras
 * (at most 8864 bytes: 50 stack frames, two 4096-byte skb texts, skb->cb), the
 * packet header and twice PWRU_CAPTURE_MASK + 1 bytes.
 */
#define PWRU_MAX_CAPTURE 9216      /* --capture-bytes at most (a 9000-byte jumbo frame fits) */
#define PWRU_CAPTURE_MASK 0x3fff   /* covers every offset and length below PWRU_MAX_CAPTURE */
#define PWRU_CAPTURE_FRAGS 8       /* page fragments copied from at most, per event */
#define PWRU_SCRATCH_SIZE 43008    /* 42 KiB */
#define PWRU_SCRATCH_LEVELS 4

/* Header of the captured bytes at the end of a record (see struct pwru_event). */
struct pwru_packet {
	__u32 len;           /* bytes the packet has from the start of data (wire length) */
	__u16 captured;      /* bytes that follow */
	__u8 link;           /* enum pwru_link */
	__u8 flags;          /* enum pwru_packet_flags */
};                       /* 8 bytes */

/* Bits of pwru_bpfmap.flags. */
enum pwru_bpfmap_flags {
	PWRU_BPFMAP_HAS_VALUE = 1 << 0,  /* .value was read (updates, lookups that found one) */
};

#define PWRU_BPFMAP_DATA_LEN 256 /* key and value bytes kept (longer ones are cut) */
#define PWRU_BPF_OBJ_NAME_LEN 16

/* A BPF map helper's arguments (--output-bpfmap), at the end of its event's record. */
struct pwru_bpfmap {
	__u32 id;            /* the map's id (bpftool map show id N) */
	__u32 key_size;      /* the map's sizes; the copies below hold at most */
	__u32 value_size;    /* PWRU_BPFMAP_DATA_LEN bytes of each */
	__u32 flags;         /* enum pwru_bpfmap_flags */
	char name[PWRU_BPF_OBJ_NAME_LEN];
	__u8 key[PWRU_BPFMAP_DATA_LEN];
	__u8 value[PWRU_BPFMAP_DATA_LEN];
};                       /* 544 bytes */

/*
 * Run-time configuration, placed in .rodata (volatile const) so the verifier
 * sees the values as constants and prunes branches of disabled features.
 */
struct pwru_config {
	__u32 netns;          /* 0 = any */
	__u32 mark;
	__u32 mark_mask;      /* 0 = mark filter off */
	__u32 ifindex;        /* 0 = any */
	__u32 stack_frames;   /* stack frames appended to each record (0 = none) */
	__u32 skb_text_len;   /* bytes of --output-skb text appended (0 = none) */
	__u32 shinfo_text_len; /* bytes of --output-skb-shared-info text appended */
	__u32 capture_bytes;  /* packet bytes appended at most (0 = none) */
	__u8 output_meta;
	__u8 output_tuple;
	__u8 output_tunnel;
	__u8 output_skb_metadata; /* read_skb_metadata was spliced in */
	__u8 track_skb;
	__u8 track_skb_by_stackid;
	__u8 have_pcap_filter;    /* filter_pcap_l2/l3 were spliced in */
	__u8 have_tunnel_filter;  /* filter_pcap_tunnel_l2/l3 were spliced in */
	__u8 have_skb_expr;       /* filter_skb_expr was spliced in */
	__u8 output_cb;           /* skb->cb appended */
	__u8 kprobe_cookie;       /* kprobes may call bpf_get_attach_cookie (5.15+) */
	__u8 kprobe_func_ip;      /* kprobes may call bpf_get_func_ip (5.15+) */
	__u8 have_xdp_expr;       /* filter_xdp_expr was spliced in */
	__u8 output_xdp_metadata; /* read_xdp_metadata was spliced in */
	__u8 track_bpf_helpers;   /* traced tc/XDP programs mark their packet for helpers */
	__u8 diagnose;            /* events carry nf_hook_slow's hook and clone births */
	/*
	 * Packet bytes in page fragments (skb_shinfo(skb)->frags) are read through the
	 * kernel's direct map: address = *page_offset_base + (page - *vmemmap_base) /
	 * sizeof(struct page) << page_shift. Both are x86_64 kernel variables (their
	 * addresses, from kallsyms); 0 = copy the linear part only.
	 */
	__u64 page_offset_base;   /* &page_offset_base, or 0 */
	__u64 vmemmap_base;       /* &vmemmap_base, or 0 */
	__u32 page_shift;
	__u8 filter_loops;       /* a spliced pcap filter loops (protochain): see read_view() */
	__u8 filter_direct;      /* tp_btf programs run filter_pcap_*_direct: see filter_pcap() */
	__u8 kprobe_btf;         /* skb_btf_cast was spliced in: see handle_kprobe() */
	__u8 _pad2;
};

#define PWRU_MAX_STACK_FRAMES 50
#define PWRU_MAX_SKB_TEXT 65536

/*
 * Every probe program loads this 64-bit constant once (see probe_id() in
 * pwru.bpf.c). The control plane replaces the low 32 bits with the probe's
 * index before each load, so one compiled program serves many attach points.
 */
#define PWRU_PROBE_ID_MARKER 0x7077727500000000ULL
#define PWRU_PROBE_ID_MARKER_HI 0x70777275U

/* probe_id of kprobe events on kernels without BPF cookies (5.10): the control plane
 * names them by func_ip instead. */
#define PWRU_PROBE_BY_ADDR 0xffffffffU

#endif /* PWRU_H */
