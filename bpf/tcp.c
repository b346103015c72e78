//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// TCP probe: per-cgroup (= per-pod) TCP golden signals aggregated in one
// per-CPU hash keyed by cgroup id. Nothing is streamed per packet or event.
//
// Hooks (no kprobes, no fentry: see LAB.md):
//   cgroup_skb egress/ingress at the cgroup root  bytes and segments in/out
//   (the egress hook also samples each sending socket's smoothed RTT)
//   tp_btf/inet_sock_set_state                    opens (active/passive), connect failures
//   tp_btf/tcp_retransmit_skb, tcp_retransmit_synack  retransmitted segments
//   tp_btf/tcp_send_reset, tcp_receive_reset      resets sent / received
//   tp_btf/kfree_skb                              packets dropped, by the kernel's reason and
//                                                 where (any protocol: the top drops view)
//
// Peers: connections opened and failed, resets and retransmits are also
// counted per (cgroup, peer) in tcp_peers, a bounded hash whose overflow is
// counted per cgroup (peer_unattributed) and in tcp_probe_stats. The peer of
// a connect is the remote address and port the socket connected to (the
// Service address where kube-proxy translates after the socket, the backend
// where a socket load balancer does it before); the peer of an accepted
// connection is the remote address alone (port 0: the client's ephemeral
// port is noise). A socket's peer key is kept in socket storage when it
// becomes established, so resets and retransmits later find it.
//
// Attribution is always by the socket's cgroup (sk->sk_cgrp_data, what
// bpf_skb_cgroup_id reads too), never by the current task: tracepoints fire
// in softirq and timer context on behalf of whatever runs on the CPU.
// Tracepoints are global, so their programs count only sockets whose cgroup
// is the root given by the loader or below it, like the cgroup hooks.
//
// Bytes are new TCP payload bytes: what the application sent or received,
// each byte once (retransmitted payload is counted apart, duplicates not at
// all); segments are GSO/GRO segments (max(1, gso_segs)), pure ACKs, SYNs and
// FINs included, retransmitted ones not (as the kernel's OutSegs).
#include "headers/probe_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define RTT_BUCKETS 32
#define MAX_CGROUP_LEVEL 32
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define DNS_PORT 53
#define EPERM 1
#define EAGAIN 11
#define ENOMEM 12
#define EBUSY 16
#define EINVAL 22
#define EHOSTUNREACH 113
#define ENOBUFS 105
#define ECONNREFUSED 111
#define ETIMEDOUT 110

// TCP states (include/net/tcp_states.h).
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT = 2,
	TCP_SYN_RECV = 3,
	TCP_TIME_WAIT = 6,
	TCP_CLOSE = 7,
	TCP_LISTEN = 10,
	TCP_NEW_SYN_RECV = 12,
};

// Minimal CO-RE views of kernel structs: only the fields read, offsets
// relocated against the running kernel's BTF at load.
struct kernfs_node {
	u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	int level;
	struct kernfs_node *kn;
	struct cgroup *ancestors[];
} __attribute__((preserve_access_index));

struct sock_cgroup_data {
	struct cgroup *cgroup;
} __attribute__((preserve_access_index));

struct in6_addr {
	u8 s6_addr[16];
} __attribute__((preserve_access_index));

// skc_daddr and skc_dport sit in anonymous unions in the kernel's struct:
// CO-RE finds them by name through those.
struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
	unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	int sk_err;
	u16 sk_protocol;
	struct sock_cgroup_data sk_cgrp_data;
} __attribute__((preserve_access_index));

struct sk_buff {
	char cb[48];
	unsigned int len;
	struct sock *sk;
	__be16 protocol;
	u16 network_header;
	unsigned char *head;
} __attribute__((preserve_access_index));

struct tcp_skb_cb {
	u16 tcp_gso_segs;
} __attribute__((preserve_access_index));

// Set by the loader: the id and level of the cgroup root the tracepoints
// count under (root_cgroup_id 0: every cgroup, the root is the hierarchy's).
volatile const u64 root_cgroup_id = 0;

// Indexes into the per-CPU tcp_probe_stats array; mirrored in Go (tcpStat*).
enum tcp_probe_stat {
	TCP_STAT_CGROUP_OVERFLOW = 0, // event not counted: tcp_stats full
	TCP_STAT_RESETS_NO_SOCKET,    // RSTs sent for a packet without a full socket (closed port, timewait)
	TCP_STAT_RETRANS_FAILED,      // retransmit attempts that failed (err != 0), counted or not
	TCP_STAT_NOT_PARSED,          // TCP packets whose headers were not read (IPv6 extension headers)
	TCP_STAT_DROP_OVERFLOW,       // drops not counted: drop_stats full
	TCP_STAT_PEER_OVERFLOW,       // peer events not counted per peer: tcp_peers full
	TCP_STAT_LOCATION_OVERFLOW,   // drops not counted per location: drop_locations full
	TCP_STAT_DROP_DST_OVERFLOW,   // socket-less drops not counted per destination: drop_dsts full
	TCP_STAT_MAX,
};

struct tcp_counters {
	// Counted on every packet: first, in the cache line of a slot's owner.
	u64 bytes_out;
	u64 bytes_in;
	u64 segs_out;
	u64 segs_in;
	u64 retrans_bytes;     // payload bytes sent again
	u64 active_opens;      // SYN_SENT -> ESTABLISHED
	u64 passive_opens;     // SYN_RECV -> ESTABLISHED
	u64 connect_refused;   // SYN_SENT -> CLOSE with ECONNREFUSED (RST answered the SYN)
	u64 connect_timeouts;  // SYN_SENT -> CLOSE with ETIMEDOUT
	u64 connect_other;     // SYN_SENT -> CLOSE otherwise (unreachable, aborted by the application)
	u64 resets_sent;
	u64 resets_received;   // RSTs received outside SYN_SENT (those are connect_refused)
	u64 retrans_segs;      // retransmitted segments, SYN-ACKs included (TcpRetransSegs)
	u64 rtt_log2_us[RTT_BUCKETS]; // sending sockets' smoothed RTT, sampled every 100 ms
	// Opens, failures, resets and retransmits not counted per peer: tcp_peers was full, or
	// the connection was established before the probe (no peer key in its storage).
	u64 peer_unattributed;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, u64);
	__type(value, struct tcp_counters);
} tcp_stats SEC(".maps");

// The fast path: each CPU's counters of a cgroup in an array, slot i of CPU c
// at key c << cgroup_slot_shift | i, owned by the cgroup id in its owner field
// (i = the id's low bits), as the DNS probe's pod slots. Userspace gives a
// free slot to a cgroup it found in tcp_stats, writing the owner in every
// CPU's row, and frees the slot of a cgroup that is gone; programs only read
// the owner. A cgroup without a slot (new, or sharing low bits with the owner)
// is counted in tcp_stats; userspace adds both. A plain array, not a per-CPU
// one: its lookup is an address computed from the key, where the per-CPU
// array's first loads a pointer per slot, a cache miss a packet under iperf3
// (most of the program's samples after its entry). The slot is 6 cache lines,
// page-aligned (BPF_F_MMAPABLE: userspace reads it without a syscall): the
// owner and the per-packet counters share the first.
struct cgroup_slot {
	u64 owner; // cgroup id; 0: free
	struct tcp_counters c;
	u64 pad; // to 384 bytes: slots start on a cache line
};

// Set by the loader: log2 of the number of slots in a CPU's row, and that
// number - 1.
volatile const u32 cgroup_slot_shift = 8;
volatile const u32 cgroup_slot_mask = 255;

#define BPF_F_MMAPABLE (1U << 10)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 256); // set by the loader: slots * possible CPUs
	__type(key, u32);
	__type(value, struct cgroup_slot);
} tcp_cgroup_slots SEC(".maps");

// Per (cgroup, peer): connections, failures, resets, retransmits. addr is
// IPv6 or IPv4-mapped (::ffff:a.b.c.d); port in host order.
struct peer_key {
	u64 cgroup_id;
	u8 addr[16];
	u16 port;   // the remote port of a connect; 0 for an accepted connection
	u8 inbound; // 1: the peer connected to this cgroup's socket
	u8 pad[5];
};

struct peer_value {
	u64 opens;           // connections established (connect or accept)
	u64 refused;         // connects refused (a RST answered the SYN)
	u64 timeouts;        // connects timed out after SYN retransmits
	u64 failed_other;    // connects that failed otherwise
	u64 resets_sent;     // RSTs this cgroup's sockets sent to the peer
	u64 resets_received; // RSTs received from it outside SYN_SENT
	u64 retrans_segs;    // segments retransmitted to it
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct peer_key);
	__type(value, struct peer_value);
} tcp_peers SEC(".maps");

#define MAP_TYPE_SK_STORAGE 24 // BPF_MAP_TYPE_SK_STORAGE
#define SK_STORAGE_GET_F_CREATE 1

// The peer key of an established socket, kept with the socket.
struct {
	__uint(type, MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct peer_key);
} tcp_peer_of SEC(".maps");

// When each socket's smoothed RTT was last sampled (bpf_ktime_get_ns).
struct {
	__uint(type, MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u64);
} tcp_rtt_at SEC(".maps");

// A sending socket's smoothed RTT is sampled at most this often. Sampling every
// RTT measurement (sock_ops RTT_CB, one program run per ACK that measured one)
// cost 150-320 ns a run, one run per 2-5 packets (BENCHMARKS.md); a time-based
// sample also weighs connections by time, not by how many ACKs they get.
#define RTT_SAMPLE_NS (100ULL * 1000 * 1000)

// Packets the kernel dropped, per (cgroup, reason). cgroup_id 0 holds drops of
// packets that had no socket and were not counted per destination (drop_dsts full).
struct drop_key {
	u64 cgroup_id;
	u32 reason; // enum skb_drop_reason; userspace names it from the kernel's BTF
	u32 pad;
};

struct drop_value {
	u64 packets;
	u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct drop_key);
	__type(value, struct drop_value);
} drop_stats SEC(".maps");

// Packets without a socket the kernel dropped (most ingress drops before the socket lookup),
// per (destination address, reason): userspace attributes them to the pod whose address it is.
// addr is IPv6 or IPv4-mapped (::ffff:a.b.c.d); all zeros when the packet is no IP packet or
// its network header was not set. Full: counted in drop_stats under cgroup 0.
struct drop_dst_key {
	u8 addr[16];
	u32 reason;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct drop_dst_key);
	__type(value, struct drop_value);
} drop_dsts SEC(".maps");

// Where the drops counted in drop_stats happened: node-wide per (kernel address that freed
// the packet, reason); userspace names the address's function from /proc/kallsyms.
struct drop_location_key {
	u64 location;
	u32 reason;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct drop_location_key);
	__type(value, u64);
} drop_locations SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCP_STAT_MAX);
	__type(key, u32);
	__type(value, u64);
} tcp_probe_stats SEC(".maps");

static __always_inline void stat_inc(u32 i)
{
	u64 *v = bpf_map_lookup_elem(&tcp_probe_stats, &i);
	if (v)
		*v += 1;
}

static __always_inline struct tcp_counters *counters_of(u64 cgroup_id)
{
	u32 i = bpf_get_smp_processor_id() << cgroup_slot_shift | ((u32)cgroup_id & cgroup_slot_mask);
	struct cgroup_slot *slot = bpf_map_lookup_elem(&tcp_cgroup_slots, &i);
	if (slot && slot->owner == cgroup_id && cgroup_id)
		return &slot->c;
	struct tcp_counters *c = bpf_map_lookup_elem(&tcp_stats, &cgroup_id);
	if (c)
		return c;
	struct tcp_counters zero = {};
	// EEXIST: another CPU added it first, fine; E2BIG: the map is full.
	if (bpf_map_update_elem(&tcp_stats, &cgroup_id, &zero, BPF_NOEXIST) == -E2BIG) {
		stat_inc(TCP_STAT_CGROUP_OVERFLOW);
		return 0;
	}
	return bpf_map_lookup_elem(&tcp_stats, &cgroup_id);
}

// sock_cgroup returns the id of sk's cgroup when it is root_cgroup_id or
// below it, else 0. sk must be a full socket.
static __always_inline u64 sock_cgroup(const struct sock *sk)
{
	struct cgroup *cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	if (!cg)
		return 0;
	u64 id = BPF_CORE_READ(cg, kn, id);
	if (root_cgroup_id == 0 || id == root_cgroup_id)
		return id;
	int level = BPF_CORE_READ(cg, level);
	for (int i = 0; i < MAX_CGROUP_LEVEL; i++) {
		if (i >= level)
			break;
		struct cgroup *anc = 0;
		bpf_core_read(&anc, sizeof(anc), &cg->ancestors[i]);
		if (anc && BPF_CORE_READ(anc, kn, id) == root_cgroup_id)
			return id;
	}
	return 0;
}

static __always_inline int is_tcp_full_sock(const struct sock *sk)
{
	if (!sk)
		return 0;
	unsigned char state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return 0; // a timewait or request sock: no sk_cgrp_data
	return BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP;
}

static __always_inline u32 log2_bucket(u64 v)
{
	u32 b = 0;
	if (v >= 1ULL << 16) { v >>= 16; b += 16; }
	if (v >= 1ULL << 8) { v >>= 8; b += 8; }
	if (v >= 1ULL << 4) { v >>= 4; b += 4; }
	if (v >= 1ULL << 2) { v >>= 2; b += 2; }
	if (v >= 1ULL << 1) { b += 1; }
	return b < RTT_BUCKETS ? b : RTT_BUCKETS - 1;
}

#define AF_INET 2
#define AF_INET6 10

// peer_key_of fills key with sk's remote address (and port unless inbound).
static __always_inline int peer_key_of(const struct sock *sk, u64 cgroup_id, int inbound, struct peer_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->cgroup_id = cgroup_id;
	key->inbound = inbound;
	if (!inbound)
		key->port = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == AF_INET) {
		__be32 a = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		key->addr[10] = 0xff;
		key->addr[11] = 0xff;
		__builtin_memcpy(&key->addr[12], &a, 4);
		return 1;
	}
	if (family == AF_INET6 && bpf_core_field_exists(sk->__sk_common.skc_v6_daddr)) {
		bpf_core_read(key->addr, 16, &sk->__sk_common.skc_v6_daddr);
		return 1;
	}
	return 0;
}

enum peer_field {
	PEER_OPENS,
	PEER_REFUSED,
	PEER_TIMEOUTS,
	PEER_FAILED_OTHER,
	PEER_RESETS_SENT,
	PEER_RESETS_RECEIVED,
	PEER_RETRANS,
};

// peer_add counts n events of one kind for the peer; c is the cgroup's counters (its
// peer_unattributed takes what the table cannot).
static __always_inline void peer_add(const struct peer_key *key, enum peer_field f, u64 n, struct tcp_counters *c)
{
	struct peer_value *v = bpf_map_lookup_elem(&tcp_peers, key);
	if (!v) {
		struct peer_value zero = {};
		if (bpf_map_update_elem(&tcp_peers, key, &zero, BPF_NOEXIST) == -E2BIG) {
			stat_inc(TCP_STAT_PEER_OVERFLOW);
			c->peer_unattributed += n;
			return;
		}
		v = bpf_map_lookup_elem(&tcp_peers, key);
		if (!v)
			return;
	}
	switch (f) {
	case PEER_OPENS:
		v->opens += n;
		break;
	case PEER_REFUSED:
		v->refused += n;
		break;
	case PEER_TIMEOUTS:
		v->timeouts += n;
		break;
	case PEER_FAILED_OTHER:
		v->failed_other += n;
		break;
	case PEER_RESETS_SENT:
		v->resets_sent += n;
		break;
	case PEER_RESETS_RECEIVED:
		v->resets_received += n;
		break;
	default:
		v->retrans_segs += n;
	}
}

// peer_add_stored counts for the peer kept in sk's storage (set when sk became established);
// a socket without one (established before the probe loaded) is unattributed.
static __always_inline void peer_add_stored(const struct sock *sk, enum peer_field f, u64 n, struct tcp_counters *c)
{
	struct peer_key *key = bpf_sk_storage_get(&tcp_peer_of, (void *)sk, 0, 0);
	if (key)
		peer_add(key, f, n, c);
	else
		c->peer_unattributed += n;
}

// ---- bytes and segments: cgroup_skb at the root ----

// UAPI struct bpf_sock (include/uapi/linux/bpf.h).
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
	__u32 src_ip4;
	__u32 src_ip6[4];
	__u32 src_port;
	__be16 dst_port;
	__u16 : 16;
	__u32 dst_ip4;
	__u32 dst_ip6[4];
	__u32 state;
	__s32 rx_queue_mapping;
};

// The first fields of the UAPI struct bpf_tcp_sock (include/uapi/linux/bpf.h).
struct bpf_tcp_sock {
	__u32 snd_cwnd;
	__u32 srtt_us;
	__u32 rtt_min;
	__u32 snd_ssthresh;
	__u32 rcv_nxt;
	__u32 snd_nxt;
};

struct tcp_head {
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack_seq;
	u8 doff_res; // data offset in the high nibble
};

// new_bytes is how many of the payload bytes [seq, seq+payload) lie at or
// beyond nxt (sequence space wraps): the bytes not sent, or not received,
// before. The cgroup hooks run before TCP updates snd_nxt (egress: the
// transmit path sets it after the packet went down) and rcv_nxt (ingress: the
// socket filter runs before the segment is processed).
static __always_inline u64 new_bytes(u32 seq, u64 payload, u32 nxt)
{
	int behind = (int)(nxt - seq);
	if (behind <= 0)
		return payload;
	return (u64)behind >= payload ? 0 : payload - behind;
}

// load_tcp_head reads the IP header's protocol and the TCP header's first
// bytes into th; 0 when skb is no TCP packet or they cannot be read. Headers
// in the linear part (nearly always: the stack builds them there, and GRO
// pulls them) are read in place; a helper call per field cost ~10 ns each.
static __always_inline int load_tcp_head(struct __sk_buff *skb, struct tcp_head *th, u32 *l4_off)
{
	u8 *ip = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	u8 proto;
	if (skb->protocol == __builtin_bswap16(ETH_P_IP)) {
		u8 vhl;
		u16 frag; // flags and fragment offset, network order
		if ((void *)(ip + 20) <= end) {
			vhl = ip[0];
			proto = ip[9];
			frag = *(u16 *)(ip + 6);
		} else if (bpf_skb_load_bytes(skb, 0, &vhl, 1) || bpf_skb_load_bytes(skb, 9, &proto, 1) ||
			   bpf_skb_load_bytes(skb, 6, &frag, 2)) {
			return 0;
		}
		if (proto != IPPROTO_TCP || (frag & __builtin_bswap16(0x1fff))) // a later fragment has no TCP header
			return 0;
		*l4_off = (vhl & 0xf) * 4;
	} else if (skb->protocol == __builtin_bswap16(ETH_P_IPV6)) {
		if ((void *)(ip + 40) <= end)
			proto = ip[6];
		else if (bpf_skb_load_bytes(skb, 6, &proto, 1))
			return 0;
		if (proto != IPPROTO_TCP) {
			if (proto == IPPROTO_HOPOPTS || proto == IPPROTO_ROUTING || proto == IPPROTO_DSTOPTS || proto == IPPROTO_FRAGMENT)
				stat_inc(TCP_STAT_NOT_PARSED); // may carry TCP; not walked
			return 0;
		}
		*l4_off = 40;
	} else {
		return 0;
	}
	u32 off = *l4_off;
	if (off > 60) // an IPv4 header is at most 60 bytes
		return 0;
	struct tcp_head *h = (void *)(ip + off);
	if ((void *)(h + 1) <= end) {
		// Word loads (x86 and arm64 load unaligned words), not a byte-wise copy.
		th->sport = h->sport;
		th->dport = h->dport;
		th->seq = h->seq;
		th->doff_res = h->doff_res;
	} else if (bpf_skb_load_bytes(skb, off, th, sizeof(*th)))
		return 0;
	return 1;
}

// count_packet counts skb if it is TCP; it returns 0 when skb cannot carry DNS (TCP on other
// ports than 53), 1 when the DNS probe's program must see it too.
static __always_inline int count_packet(struct __sk_buff *skb, int egress)
{
	u32 l4_off;
	struct tcp_head th;
	if (!load_tcp_head(skb, &th, &l4_off))
		return 1;
	int maybe_dns = th.sport == __builtin_bswap16(DNS_PORT) || th.dport == __builtin_bswap16(DNS_PORT);
	u32 hdrs = l4_off + (th.doff_res >> 4) * 4;
	u64 payload = skb->len > hdrs ? skb->len - hdrs : 0;
	u64 segs = skb->gso_segs ? skb->gso_segs : 1;
	u32 seq = __builtin_bswap32(th.seq);

	// Payload already sent (a retransmit) or already received (a duplicate)
	// is not new data: bytes count what the application sent or read, once.
	u64 fresh = payload;
	u32 srtt_us = 0; // the sender's smoothed RTT, to sample; 0: none
	struct bpf_sock *sk = skb->sk;
	if (payload && sk) {
		sk = bpf_sk_fullsock(sk);
		// A listener stands in for a connection still being set up (data on the ACK
		// that completes the handshake): its sequence numbers are not the flow's.
		struct bpf_tcp_sock *tp = sk && sk->state != TCP_LISTEN ? bpf_tcp_sock(sk) : 0;
		if (tp) {
			fresh = new_bytes(seq, payload, egress ? tp->snd_nxt : tp->rcv_nxt);
			if (egress)
				srtt_us = tp->srtt_us >> 3; // kept scaled by 8, as the kernel's
		}
	}

	struct tcp_counters *c = counters_of(bpf_skb_cgroup_id(skb));
	if (!c)
		return maybe_dns;
	if (srtt_us && sk) {
		u64 *at = bpf_sk_storage_get(&tcp_rtt_at, (void *)sk, 0, SK_STORAGE_GET_F_CREATE);
		// TCP stamps each packet it sends with its departure time, from the
		// monotonic clock (EDT): reading it costs less than the clock (~20 ns).
		u64 now = skb->tstamp;
		if (!now)
			now = bpf_ktime_get_ns();
		if (at && now - *at >= RTT_SAMPLE_NS) {
			*at = now;
			c->rtt_log2_us[log2_bucket(srtt_us)] += 1;
		}
	}
	if (egress) {
		c->bytes_out += fresh;
		c->retrans_bytes += payload - fresh;
		// As the kernel's OutSegs: retransmitted segments are not counted again.
		if (fresh || !payload)
			c->segs_out += segs;
	} else {
		c->bytes_in += fresh;
		c->segs_in += segs;
	}
	return maybe_dns;
}

// The DNS probe's programs at index 0 when both probes are loaded (TCPOptions.DNS): the
// TCP programs tail-call them on every packet that may carry DNS, so the kernel dispatches
// one program a packet instead of two (the dispatch was ~35 % of the hook's cost under
// iperf3). One array per direction: the kernel only lets a program tail-call programs of
// its own attach type. Empty: the tail call falls through.
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} then_egress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} then_ingress SEC(".maps");

SEC("cgroup_skb/egress")
int tcp_egress(struct __sk_buff *skb)
{
	if (count_packet(skb, 1))
		bpf_tail_call_static(skb, &then_egress, 0); // returns only when the slot is empty
	return 1;
}

SEC("cgroup_skb/ingress")
int tcp_ingress(struct __sk_buff *skb)
{
	if (count_packet(skb, 0))
		bpf_tail_call_static(skb, &then_ingress, 0);
	return 1;
}

// ---- connection lifecycle, retransmits, resets: BTF tracepoints ----

SEC("tp_btf/inet_sock_set_state")
int tcp_set_state(u64 *ctx)
{
	const struct sock *sk = (void *)ctx[0];
	int oldstate = (int)ctx[1], newstate = (int)ctx[2];
	if (!(oldstate == TCP_SYN_SENT && (newstate == TCP_ESTABLISHED || newstate == TCP_CLOSE)) &&
	    !(oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED))
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	u64 id = sock_cgroup(sk);
	if (!id)
		return 0;
	struct tcp_counters *c = counters_of(id);
	if (!c)
		return 0;
	struct peer_key key;
	int inbound = oldstate == TCP_SYN_RECV;
	int have_peer = peer_key_of(sk, id, inbound, &key);
	if (newstate == TCP_ESTABLISHED) {
		if (oldstate == TCP_SYN_SENT)
			c->active_opens++;
		else
			c->passive_opens++;
		if (!have_peer) {
			c->peer_unattributed++;
			return 0;
		}
		peer_add(&key, PEER_OPENS, 1, c);
		struct peer_key *kept = bpf_sk_storage_get(&tcp_peer_of, (void *)sk, 0, SK_STORAGE_GET_F_CREATE);
		if (kept)
			*kept = key;
		return 0;
	}
	// sk_err is set before tcp_done moves the socket to CLOSE.
	int err = BPF_CORE_READ(sk, sk_err);
	enum peer_field f = PEER_FAILED_OTHER;
	if (err == ECONNREFUSED) {
		c->connect_refused++;
		f = PEER_REFUSED;
	} else if (err == ETIMEDOUT) {
		c->connect_timeouts++;
		f = PEER_TIMEOUTS;
	} else {
		c->connect_other++;
	}
	if (have_peer)
		peer_add(&key, f, 1, c);
	else
		c->peer_unattributed++;
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int tcp_retransmit(u64 *ctx)
{
	const struct sock *sk = (void *)ctx[0];
	const struct sk_buff *skb = (void *)ctx[1];
	int err = (int)ctx[2];
	if (err)
		stat_inc(TCP_STAT_RETRANS_FAILED);
	// The kernel counts a retransmit (TcpRetransSegs) once it hands the segment to the IP
	// layer, and whatever the send returns after that still counts: the device or its qdisc
	// dropped it (NET_XMIT_DROP, a positive err: a full veth backlog on a busy node), netfilter
	// or a cgroup program (EPERM), no buffer for the copy (ENOBUFS), a device down. Only the
	// earlier bail-outs do not count: still queued (EBUSY), no memory (ENOMEM), no route
	// (EHOSTUNREACH), no window (EAGAIN), a sequence gone (EINVAL). (One of those errnos
	// returned after the hand-over -- a route lost between the check and the send -- is
	// missed; the kernel's counter has it.)
	if (err == -EBUSY || err == -ENOMEM || err == -EHOSTUNREACH || err == -EAGAIN || err == -EINVAL)
		return 0;
	u64 id = sock_cgroup(sk);
	if (!id)
		return 0;
	u16 segs = 0;
	bpf_core_read(&segs, sizeof(segs), &((struct tcp_skb_cb *)&skb->cb[0])->tcp_gso_segs);
	struct tcp_counters *c = counters_of(id);
	if (!c)
		return 0;
	u64 n = segs ? segs : 1;
	c->retrans_segs += n;
	// A SYN retransmitted (SYN_SENT) has no peer key yet: its connect counts at the end.
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_SENT) {
		struct peer_key key;
		if (peer_key_of(sk, id, 0, &key))
			peer_add(&key, PEER_RETRANS, n, c);
		else
			c->peer_unattributed += n;
		return 0;
	}
	peer_add_stored(sk, PEER_RETRANS, n, c);
	return 0;
}

SEC("tp_btf/tcp_retransmit_synack")
int tcp_retransmit_synack(u64 *ctx)
{
	const struct sock *listener = (void *)ctx[0];
	// The request sock starts with a sock_common: its remote address is the client's.
	const struct sock *req = (void *)ctx[1];
	if (!is_tcp_full_sock(listener))
		return 0;
	u64 id = sock_cgroup(listener);
	if (!id)
		return 0;
	struct tcp_counters *c = counters_of(id);
	if (!c)
		return 0;
	c->retrans_segs++;
	struct peer_key key;
	if (req && peer_key_of(req, id, 1, &key))
		peer_add(&key, PEER_RETRANS, 1, c);
	else
		c->peer_unattributed++;
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int tcp_send_reset(u64 *ctx)
{
	const struct sock *sk = (void *)ctx[0];
	if (!is_tcp_full_sock(sk)) {
		stat_inc(TCP_STAT_RESETS_NO_SOCKET);
		return 0;
	}
	u64 id = sock_cgroup(sk);
	if (!id)
		return 0;
	struct tcp_counters *c = counters_of(id);
	if (!c)
		return 0;
	c->resets_sent++;
	peer_add_stored(sk, PEER_RESETS_SENT, 1, c);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int tcp_receive_reset(u64 *ctx)
{
	const struct sock *sk = (void *)ctx[0];
	if (!is_tcp_full_sock(sk))
		return 0;
	// A RST answering our SYN is a refused connect (counted at the state change).
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_SENT)
		return 0;
	u64 id = sock_cgroup(sk);
	if (!id)
		return 0;
	struct tcp_counters *c = counters_of(id);
	if (!c)
		return 0;
	c->resets_received++;
	peer_add_stored(sk, PEER_RESETS_RECEIVED, 1, c);
	return 0;
}

// ---- drops: the kfree_skb tracepoint ----

#define SKB_CONSUMED 1 // reasons 0 (not dropped yet) and 1 (consumed) are no drops

static __always_inline int is_full_sock(const struct sock *sk)
{
	if (!sk)
		return 0;
	unsigned char state = BPF_CORE_READ(sk, __sk_common.skc_state);
	return state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV;
}

// drop_add counts a dropped packet of len bytes under key in map; a full map counts stat and
// returns 0.
static __always_inline int drop_add(void *map, const void *key, u64 len, u32 stat)
{
	struct drop_value *v = bpf_map_lookup_elem(map, key);
	if (!v) {
		struct drop_value zero = {};
		if (bpf_map_update_elem(map, key, &zero, BPF_NOEXIST) == -E2BIG) {
			stat_inc(stat);
			return 0;
		}
		v = bpf_map_lookup_elem(map, key);
		if (!v)
			return 0;
	}
	v->packets++;
	v->bytes += len;
	return 1;
}

// drop_dst_of reads the destination address of skb's IP header into key (left zero for a
// packet that is no IPv4 or IPv6 packet, or whose network header is not set).
static __always_inline void drop_dst_of(const struct sk_buff *skb, struct drop_dst_key *key)
{
	__be16 proto = BPF_CORE_READ(skb, protocol);
	u16 nh = BPF_CORE_READ(skb, network_header);
	unsigned char *head = BPF_CORE_READ(skb, head);
	if (nh == (u16)~0U || !head)
		return;
	if (proto == __builtin_bswap16(ETH_P_IP)) {
		u8 hdr[20];
		if (bpf_probe_read_kernel(hdr, sizeof(hdr), head + nh) || (hdr[0] >> 4) != 4)
			return;
		key->addr[10] = 0xff;
		key->addr[11] = 0xff;
		__builtin_memcpy(&key->addr[12], &hdr[16], 4);
	} else if (proto == __builtin_bswap16(ETH_P_IPV6)) {
		u8 v;
		if (bpf_probe_read_kernel(&v, 1, head + nh) || (v >> 4) != 6)
			return;
		bpf_probe_read_kernel(key->addr, 16, head + nh + 24);
	}
}

SEC("tp_btf/kfree_skb")
int drop_skb(u64 *ctx)
{
	const struct sk_buff *skb = (void *)ctx[0];
	u32 reason = (u32)ctx[2];
	if (reason <= SKB_CONSUMED)
		return 0;
	// The packet's own socket (sent, or received and matched) or, for a packet dropped on
	// receive, the socket it was for (the tracepoint's rx_sk, Linux 6.10+).
	const struct sock *sk = BPF_CORE_READ(skb, sk);
	if (!is_full_sock(sk)) {
		sk = (void *)ctx[3];
		if (!is_full_sock(sk))
			sk = 0;
	}
	u64 len = BPF_CORE_READ(skb, len);
	if (sk) {
		struct drop_key key = {.reason = reason, .cgroup_id = sock_cgroup(sk)};
		if (!key.cgroup_id)
			return 0; // a socket outside the root: not ours to count
		if (!drop_add(&drop_stats, &key, len, TCP_STAT_DROP_OVERFLOW))
			return 0;
	} else {
		struct drop_dst_key dk = {.reason = reason};
		drop_dst_of(skb, &dk);
		if (!drop_add(&drop_dsts, &dk, len, TCP_STAT_DROP_DST_OVERFLOW)) {
			struct drop_key key = {.reason = reason};
			if (!drop_add(&drop_stats, &key, len, TCP_STAT_DROP_OVERFLOW))
				return 0;
		}
	}

	struct drop_location_key lk = {.location = ctx[1], .reason = reason};
	u64 *n = bpf_map_lookup_elem(&drop_locations, &lk);
	if (!n) {
		u64 zero = 0;
		if (bpf_map_update_elem(&drop_locations, &lk, &zero, BPF_NOEXIST) == -E2BIG) {
			stat_inc(TCP_STAT_LOCATION_OVERFLOW);
			return 0;
		}
		n = bpf_map_lookup_elem(&drop_locations, &lk);
		if (!n)
			return 0;
	}
	*n += 1;
	return 0;
}
