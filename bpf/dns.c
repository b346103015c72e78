//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// DNS probe: cgroup_skb egress + ingress programs that parse DNS over
// UDP and TCP port 53 (IPv4 and IPv6) and aggregate per cgroup (= per pod)
// in kernel maps. Nothing is streamed per packet; userspace reads the maps.
//
// Roles, decided by direction and port:
//   egress  dst:53 -> query sent by a client pod
//   ingress src:53 -> response received by a client pod
//   egress  src:53 -> response sent by a server pod (CoreDNS)
//   ingress dst:53 -> query received by a server pod
//
// Not covered (documented limits): a TCP DNS message split over several
// segments (only a segment that starts with the 2-byte length prefix is
// parsed; a continuation segment is counted as malformed), several messages
// in one TCP segment (only the first is parsed), IPv4 non-first fragments and
// IPv6 fragments or more than 4 extension headers (counted as not parsed),
// questions beyond the first (QDCOUNT > 1 is parsed as its first question),
// the question of a server pod's messages (checked from the header only),
// and TCP retransmissions (a retransmitted segment is counted again).
//
// ABLATE_* macros compile parts out for the cost breakdown benchmark
// (`make bench-probe-parts`); the product is built without them.
#include "headers/probe_types.h"
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define DNS_PORT 53
#define QTYPE_SLOTS 12
#define RCODE_SLOTS 5
#define LATENCY_BUCKETS 32
// Room for a question (255 name bytes + qtype + qclass) rounded up to 8.
#define WIRE_MAX 264
// A question is at most 255 name bytes + 2 qtype + 2 qclass bytes.
#define QUESTION_MAX 259
#define IPV6_EXT_MAX 4

// Set by the loader to the number of pod slots - 1 (a power of two - 1).
volatile const u32 pod_slot_mask = 255;
// Set by the loader to the number of inflight sets - 1 (a power of two - 1).
volatile const u32 inflight_mask = 255;
// Set by the loader (Options.DNSTimeout): a query without its answer this
// long after it was sent is counted as timed out. 5 s is the resolver's
// default timeout (resolv.conf(5)).
volatile const u64 dns_timeout_ns = 5ULL * 1000 * 1000 * 1000;

// Indexes into the per-CPU probe_stats array; mirrored in Go (stat* consts).
enum probe_stat {
	STAT_POD_OVERFLOW = 0,      // packet of a pod not counted: pod map full
	STAT_NAME_OVERFLOW,         // name increment not counted: name map full
	STAT_INFLIGHT_INSERTS,      // client queries remembered for latency
	STAT_INFLIGHT_DUPLICATES,   // query with the same 5-tuple+id already pending
	STAT_INFLIGHT_MATCHED,      // responses matched with their query (latency samples)
	STAT_UNMATCHED_RESPONSES,   // answers matching no pending query (unsolicited: forged, duplicate)
	STAT_MALFORMED,             // port-53 payloads that are not valid DNS
	STAT_NOT_PARSED,            // fragments / too many IPv6 extension headers
	STAT_DNS_MESSAGES,          // port-53 messages examined (valid or malformed)
	STAT_INFLIGHT_EVICTED,      // pending query overwritten by another one in its slot
	STAT_INFLIGHT_EXPIRED,      // query never answered within dns_timeout_ns (found when its way was reused)
	STAT_NAME_INSERTS,          // new (cgroup, name) entries: userspace drains early when many
	STAT_LATE_ANSWERS,          // answers to a pending query older than dns_timeout_ns
	STAT_EVICTED_ANSWERS,       // answers to a query the table had evicted (counted, not timed)
	STAT_TRACE_LOST,            // trace events not sent: the ring buffer was full
	STAT_MAX,
};

enum role {
	ROLE_CLIENT_QUERY = 0,
	ROLE_CLIENT_RESPONSE,
	ROLE_SERVER_QUERY,
	ROLE_SERVER_RESPONSE,
};

// The servers a client pod sends its queries to, per CPU: a pod asks one to
// three (its resolv.conf nameservers, or the CoreDNS replicas behind the
// kube-dns Service where the socket load balancer picks a backend before
// the packet exists); more on one CPU are summed in other_server_*.
#define SERVER_SLOTS 4

struct server_counters {
	u64 addr[2]; // IPv4 in the low 4 bytes of addr[0], the rest zero
	u32 tag;     // port | address length << 16 | 1 << 24; 0: free
	u32 pad;
	u64 queries;
	u64 answers;   // counted answers (not the unsolicited)
	u64 nxdomain;
	u64 servfail;
	u64 timed;          // answers matched with their query and timed
	u64 latency_sum_us; // their client-side latencies, summed
};

struct pod_counters {
	u64 queries;          // client role: queries sent
	u64 responses;        // client role: responses received
	u64 malformed;        // any role: port-53 payloads that did not parse
	u64 bytes_out;        // any role: IP bytes of port-53 packets sent
	u64 bytes_in;         // any role: IP bytes of port-53 packets received
	u64 server_queries;   // server role: queries received
	u64 server_responses; // server role: responses sent
	u64 tcp_queries;      // client role: queries sent over TCP (subset of queries)
	// Client role, each weighing 2^shift while the pod's queries are timed
	// 1 in 2^shift (see pod_slot):
	u64 timeouts;    // queries without an answer within dns_timeout_ns
	u64 evicted;     // pending queries dropped from a full in-flight set
	// Client role, not weighted: answers that match no query the pod has
	// pending (forged, or a duplicate answer). They are kept out of
	// responses, rcode and the NXDOMAIN names, so that any sender with source
	// port 53 cannot paint an NXDOMAIN storm on another pod's row.
	u64 unsolicited;
	u64 qtype[QTYPE_SLOTS];
	u64 rcode[RCODE_SLOTS];
	u64 latency_log2_us[LATENCY_BUCKETS];
	// Client role: per server (see server_counters), and the queries and
	// answers of servers beyond SERVER_SLOTS.
	struct server_counters servers[SERVER_SLOTS];
	u64 other_server_queries;
	u64 other_server_answers;
	// Server role: the responses a server pod sent by rcode, and the time
	// from a query arriving to its response leaving (sampled like the
	// client's: each timed response weighs 2^shift).
	u64 served_rcode[RCODE_SLOTS];
	u64 served_latency_log2_us[LATENCY_BUCKETS];
};

struct name_key {
	u64 cgroup_id;
	u64 name_hash; // FNV-1a 64 of the lower-cased dotted name
};

// The name is kept in wire format (length-prefixed labels, original case);
// userspace turns it into lower-cased dotted text, which keeps the per-packet
// work to a walk over the label lengths and a word-wise hash.
// The counters come first: in the hash table's element they then share a
// cache line with the key, so a repeated name costs one cache miss, not two.
// dns_header sits right before wire so that the DNS header and the question
// are read with one bpf_skb_load_bytes into the scratch copy of this struct
// (in the table it is the header of the entry's first message, unused).
struct name_value {
	u64 queries;
	u64 nxdomain;
	u32 wire_len; // bytes of wire[] that are the name, root label included
	u8 dns_header[12];
	u8 wire[WIRE_MAX];
};


struct scratch {
	struct name_value nv; // header and question are loaded into nv.dns_header
	u64 name_hash;
};

_Static_assert(__builtin_offsetof(struct name_value, wire) ==
	       __builtin_offsetof(struct name_value, dns_header) + 12,
	       "the question must follow the DNS header");

// Max entries are overridden from Go (Options.MaxPods/MaxNames/MaxInflight).
// pod_stats is not preallocated: a preallocated per-CPU hash reserves
// max_entries x 456 bytes on every CPU (240 MiB on a 64-CPU node for 8,192
// pods); a pod's values are allocated when its first DNS packet is seen.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, u64);
	__type(value, struct pod_counters);
} pod_stats SEC(".maps");

// A fast-path slot's owner, and how the owner's latency is sampled.
struct pod_slot {
	u64 cgroup_id; // 0: free
	// 1 in 2^latency_sample_shift of the pod's queries is timed (chosen by
	// the query's key hash, so its response agrees), each timed response
	// weighing 2^shift in the histogram. Userspace raises it for a pod
	// sending more queries per second than it needs to estimate
	// percentiles (Options.LatencySampleAbove); 0: every query is timed.
	u32 latency_sample_shift;
	// The shift before the last change, kept by userspace until the queries
	// sent under it are answered or timed out (dns_timeout_ns): an answer is
	// looked up when either shift timed its query, and called unsolicited
	// only when both did. Equal to latency_sample_shift otherwise.
	u32 prev_sample_shift;
};

// The fast path for pods: per-CPU counters in an array, slot i owned by the
// cgroup id in pod_slot_owner[i] (i = the id's low bits). Userspace assigns a
// free slot to a pod it has seen in pod_stats, and frees the slot of a pod
// that is gone (zeroing its counters a read later, when no program can still
// be using it); programs only read the owner, so a slot never changes hands
// under a running program. A pod without a slot (new, or sharing low bits
// with a pod that has it) is counted in pod_stats; userspace adds both.
// Indexing an array instead of looking up a hash saved ~20 ns per packet.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, u32);
	__type(value, struct pod_slot);
} pod_slot_owner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, u32);
	__type(value, struct pod_counters);
} pod_slot_counters SEC(".maps");

// One slot pointing at the name table being written. Userspace swaps the
// slot to a second, empty table before draining: the map-in-map update waits
// for running programs (synchronize_rcu), so the drained table has no writer
// left and read-and-delete loses no increment.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(max_entries, 16384);
		__type(key, struct name_key);
		__type(value, struct name_value);
	});
} name_tables SEC(".maps");

// Hot names are counted without the hash table: a direct-mapped array of
// slots, slot i owned by the key (see name_slot_key) userspace wrote there.
// Userspace gives a free slot to a name it drained more than once in an
// interval and takes it back from a name gone idle; programs only compare
// the key and add, so the hash table's jhash, bucket and element are skipped
// for the names a node repeats. The slots are per CPU, the owner's key
// written into every CPU's copy: a counter in a cache line shared by the
// CPUs cost ~10 ns per packet under load (the line moves between their
// caches at every add), a private one ~0.3 ns. Like the hash table, the
// array is one of two swapped by DrainNames, and userspace writes owners
// only into the array the programs do not use, so no count is lost: a
// name's count is in whichever array or table it was added to, and both are
// read after the swap. 1024 slots of 24 bytes per CPU by default (fewer on
// nodes with many CPUs, see nameslots.go).
struct name_slot {
	u64 key; // name_slot_key of the owner; 0: free
	u64 queries;
	u64 nxdomain;
};

// Set by the loader to the number of name slots - 1 (a power of two - 1).
volatile const u32 name_slot_mask = 1023;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
		__uint(max_entries, 1024);
		__type(key, u32);
		__type(value, struct name_slot);
	});
} name_slot_tables SEC(".maps");

// Unused globals that make BTF carry the full key/value types of the inner
// maps (otherwise emitted as forward declarations that cilium/ebpf rejects).
struct name_key unused_name_key __attribute__((unused));
struct name_value unused_name_value __attribute__((unused));
struct name_slot unused_name_slot __attribute__((unused));

// Pending client queries, for latency, timeouts and to check that an answer
// was asked for (the timed ones, see pod_slot): a 4-way set-associative
// table, a set picked by a hash of the key. A query whose set is full
// replaces the oldest pending query of the set (counted as evicted, on the
// node and for the pod that sent it; its fingerprint is kept in
// inflight_evicted so that its answer is still counted, not called
// unsolicited). A query unanswered for dns_timeout_ns is counted as timed
// out for its pod when its way is reused or its late answer comes;
// userspace adds those still waiting in the table (ReadPods). Two responses
// to one query racing on two CPUs could both match (no atomics: the probe
// must also load where BPF atomics are missing).
//
// The table is small on purpose (1024 slots, 16 KiB, by default): an array
// map that small is kmalloc'ed in the kernel's direct map, so its random
// accesses hit the TLB. With 16,384 direct-mapped slots (256 KiB, vmalloc'ed
// pages) the page walks of these accesses were ~40 ns per DNS packet under
// load, a quarter of the probe's cost. Four ways keep evictions rare at
// hundreds of concurrent queries (0 in the dnsperf benchmark, 400 pending).
//
// A way holds 32 bits of the key's 64-bit hash (addresses, ports, DNS id,
// protocol) instead of the key itself; with the set index that is 40 bits
// or more: two pending queries of a set share a fingerprint with
// probability 2^-30, and a forged answer must guess them on top of the DNS
// id and port it already has to guess.
#define INFLIGHT_WAYS 4

struct inflight_slot {
	u32 fingerprint; // low 32 bits of the key's hash, never 0
	// The sending pod's cgroup id, to charge its timeouts and evictions; 0
	// when the id does not fit in 32 bits (cgroup ids are inode numbers,
	// below 2^32 on 64-bit kernels until the kernel's id space wraps).
	u32 cgroup;
	u64 sent_ns; // 0: free
};

struct inflight_set {
	struct inflight_slot way[INFLIGHT_WAYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, u32);
	__type(value, struct inflight_set);
} inflight SEC(".maps");

// The fingerprints of the queries last evicted from each way of a set: their
// answers are counted (not timed), not called unsolicited. Touched only when
// a query is evicted or an answer matches no pending query.
struct inflight_evicted_set {
	u32 fingerprint[INFLIGHT_WAYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, u32);
	__type(value, struct inflight_evicted_set);
} inflight_evicted SEC(".maps");

// Queries a server pod received and has not answered yet, to time its
// responses: the same 4-way sets as inflight, keyed by the query seen from
// the server (client address and port, server address and port, DNS id,
// protocol) salted apart from the client's key. Nothing is charged when a
// way is reused: a server's unanswered queries are served_queries minus
// served_responses.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, u32);
	__type(value, struct inflight_set);
} server_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, u32);
	__type(value, u64);
} probe_stats SEC(".maps");

// Two scratch buffers per CPU, picked by nesting depth: a program running
// in task context (egress from sendmsg) can be interrupted by a softirq
// running the probe on the same CPU (ingress), which must not overwrite the
// header and name the interrupted run is still using.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, struct scratch);
} scratch_buf SEC(".maps");

// Per-CPU nesting depth of DNS handling (index into scratch_buf). A nested
// run always finishes before the one it interrupted resumes, so plain
// increments stay balanced.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} nesting SEC(".maps");

// Never written: the initial value of a new pod entry.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct pod_counters);
} zero_pod SEC(".maps");

// Tracing (kubectl isoobs top dns --trace): the client messages of the pods in
// `traced` (cgroup id -> shift) go to userspace through trace_events, 1 in
// 2^shift of a pod's queries with their answers (picked by the key's hash, so
// a query and its answer agree). trace_on[0] is the number of traced pods:
// while it is 0 every other pod pays one load of it per client message; while
// a pod is traced, the node's other pods pay one hash lookup more.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} trace_on SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u64);
	__type(value, u32);
} traced SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} trace_events SEC(".maps");

enum trace_kind {
	TRACE_QUERY = 0,
	TRACE_ANSWER,      // matched with its query: latency_ns is set
	TRACE_LATE,        // matched, after dns_timeout_ns (also a timeout)
	TRACE_UNCHECKED,   // not checked (the pod's queries are timed 1 in 2^k), or evicted query's
	TRACE_UNSOLICITED, // matched no pending query: not counted as a response
};

struct trace_event {
	u64 time_ns; // bpf_ktime_get_ns
	u64 cgroup_id;
	u64 latency_ns;
	u8 server[16]; // IPv4 in the first 4 bytes
	u16 server_port;
	u16 client_port;
	u16 dns_id;
	u16 qtype;
	u16 ancount;
	u16 wire_len;
	u8 kind;
	u8 rcode;
	u8 alen;
	u8 proto;
	u8 wire[WIRE_MAX];
};

struct trace_event unused_trace_event __attribute__((unused));

// Per-CPU counters are bumped with plain adds: an atomic per counter would
// cost more than the rest of the probe. The only loss possible is a softirq
// on the same CPU updating the same counter of the same cgroup inside the
// 3-instruction read-add-write window of an interrupted program.
static __always_inline void stat_inc(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&probe_stats, &idx);
	if (v)
		*v += 1;
}

// Slots of pod_counters.qtype; the last one is "other". Mirrored in Go.
static __always_inline u32 qtype_slot(u16 t)
{
	switch (t) {
	case 1: return 0;   // A
	case 28: return 1;  // AAAA
	case 5: return 2;   // CNAME
	case 12: return 3;  // PTR
	case 33: return 4;  // SRV
	case 65: return 5;  // HTTPS
	case 16: return 6;  // TXT
	case 15: return 7;  // MX
	case 2: return 8;   // NS
	case 6: return 9;   // SOA
	case 255: return 10; // ANY
	default: return 11;
	}
}

static __always_inline u32 rcode_slot(u8 rcode)
{
	switch (rcode) {
	case 0: return 0; // NOERROR
	case 3: return 1; // NXDOMAIN
	case 2: return 2; // SERVFAIL
	case 5: return 3; // REFUSED
	default: return 4;
	}
}

static __always_inline u32 log2_bucket(u64 v)
{
	u32 r = 0;
	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r > LATENCY_BUCKETS - 1 ? LATENCY_BUCKETS - 1 : r;
}

#define HASH_SEED 0xcbf29ce484222325ULL
#define HASH_MUL 0x9e3779b97f4a7c15ULL

static __always_inline u64 mix64(u64 h, u64 w)
{
	h = (h ^ w) * HASH_MUL;
	return h ^ (h >> 29);
}

// lower8 lower-cases the ASCII letters A-Z of 8 bytes at once (SWAR); label
// length bytes (< 64) and non-ASCII bytes are left alone.
static __always_inline u64 lower8(u64 w)
{
	u64 low7 = w & 0x7f7f7f7f7f7f7f7fULL;
	u64 ge_a = low7 + 0x3f3f3f3f3f3f3f3fULL; // high bit set where byte >= 'A'
	u64 gt_z = low7 + 0x2525252525252525ULL; // high bit set where byte > 'Z'
	u64 upper = (ge_a ^ gt_z) & ~w & 0x8080808080808080ULL;
	return w | (upper >> 2);
}

// parse_message loads the DNS header and the question at off (n bytes at
// most, header included) into the scratch buffer with one helper call and
// checks the name: labels of at most 63 bytes, no compression pointer or
// reserved label type, at most 255 bytes in all, qtype and qclass present.
// It leaves the name's wire length in the scratch buffer and returns the
// qtype, or -1 if malformed. The loop is bounded by the 255-byte limit.
//
// It is a global (non-inlined) function so the verifier checks its loop
// once, with unknown arguments, instead of once per path into it.
__attribute__((noinline)) int parse_message(struct __sk_buff *skb, u64 off, u64 n, u32 slot)
{
	struct scratch *s = bpf_map_lookup_elem(&scratch_buf, &slot);
	if (!s)
		return -1;
	// 64-bit lengths and positions: a 32-bit one is re-zero-extended after
	// its bound check and the verifier loses the bound.
	// Smallest: header + root + qtype + qclass.
	if (n < 12 + 5 || n > 12 + QUESTION_MAX)
		return -1;
	if (bpf_skb_load_bytes(skb, off, s->nv.dns_header, n) < 0)
		return -1;
	n -= 12;

	u64 pos = 0;
#pragma clang loop unroll(disable)
	for (int i = 0; i < 128; i++) {
		if (pos >= n)
			return -1;
		u64 c = s->nv.wire[pos & 0xff];
		if (c == 0)
			break;
		if (c > 63) // 0xC0 pointer or reserved 0x40/0x80 types
			return -1;
		pos += c + 1;
		if (i == 127) // 128 labels do not fit in 255 bytes
			return -1;
	}
	if (pos > 254) // name longer than 255 bytes
		return -1;
	if (pos + 5 > n) // qtype and qclass after the root label
		return -1;
	s->nv.wire_len = pos + 1;
	pos &= 0xff;
	return (s->nv.wire[pos + 1] << 8) | s->nv.wire[pos + 2];
}

// hash_name leaves a case-insensitive 64-bit hash of the name that
// parse_message left in the scratch buffer in s->name_hash. Only queries and
// NXDOMAIN responses need it (name table key).
__attribute__((noinline)) int hash_name(u32 slot)
{
	struct scratch *s = bpf_map_lookup_elem(&scratch_buf, &slot);
	if (!s)
		return -1;
	// The length is read from the map: unknown to the verifier, so this is
	// checked once for any length up to 255.
	u64 wire_len = *(volatile u32 *)&s->nv.wire_len & 0xff;
	u64 h = HASH_SEED;
#pragma clang loop unroll(disable)
	for (u64 o = 0; o < 256; o += 8) {
		if (o >= wire_len)
			break;
		u64 w = *(u64 *)&s->nv.wire[o];
		u64 rest = wire_len - o;
		if (rest < 8) // little endian: the name's bytes are the low ones
			w &= (1ULL << (rest * 8)) - 1;
		h = (h ^ lower8(w)) * HASH_MUL;
		h ^= h >> 29;
	}
	s->name_hash = h;
	return 0;
}

static __always_inline void name_add(u64 cgroup_id, u64 hash, struct scratch *s, u32 wire_len, int nxdomain)
{
	u32 zero = 0;
#ifndef ABLATE_NAME_SLOTS
	// name_slot_key: never 0; the slot index is bits 32 and up.
	u64 slot_key = mix64(hash, cgroup_id) | 1;
	u32 si = (u32)(slot_key >> 32) & name_slot_mask;
	void *slots = bpf_map_lookup_elem(&name_slot_tables, &zero);
	if (slots) {
		struct name_slot *e = bpf_map_lookup_elem(slots, &si);
		if (e && e->key == slot_key) { // this CPU's copy: plain adds
			if (nxdomain)
				e->nxdomain++;
			else
				e->queries++;
			return;
		}
	}
#endif
	void *table = bpf_map_lookup_elem(&name_tables, &zero);
	if (!table)
		return;
	struct name_key key = { .cgroup_id = cgroup_id, .name_hash = hash };
	struct name_value *v = bpf_map_lookup_elem(table, &key);
	if (!v) {
		s->nv.queries = nxdomain ? 0 : 1;
		s->nv.nxdomain = nxdomain ? 1 : 0;
		s->nv.wire_len = wire_len;
		long err = bpf_map_update_elem(table, &key, &s->nv, BPF_NOEXIST);
		if (err == 0) {
			stat_inc(STAT_NAME_INSERTS);
			return;
		}
		if (err != -EEXIST) {
			stat_inc(STAT_NAME_OVERFLOW);
			return;
		}
		// Another CPU inserted it first: add to its entry.
		v = bpf_map_lookup_elem(table, &key);
		if (!v) {
			stat_inc(STAT_NAME_OVERFLOW);
			return;
		}
	}
	if (nxdomain)
		__sync_fetch_and_add(&v->nxdomain, 1);
	else
		__sync_fetch_and_add(&v->queries, 1);
}

// load_hdr copies n (constant: 2 or a multiple of 4) header bytes at off to
// the stack: straight from the packet's linear data when they are there
// (always for headers the local stack built), otherwise with
// bpf_skb_load_bytes. A helper call per header was most of the cost of
// every non-DNS packet.
static __always_inline int load_hdr(struct __sk_buff *skb, u32 off, void *to, const u32 n)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (off < 0x4000) {
		u8 *p = (u8 *)data + off;
		if ((void *)(p + n) <= end) {
			if (n == 2) {
				*(u16 *)to = *(u16 *)p;
				return 0;
			}
#pragma clang loop unroll(full)
			for (u32 i = 0; i < n / 4; i++)
				((u32 *)to)[i] = ((u32 *)p)[i];
			return 0;
		}
	}
	return bpf_skb_load_bytes(skb, off, to, n);
}

static __always_inline void handle_dns(struct __sk_buff *skb, int egress, int role, u8 proto, u32 payload,
				       u8 *saddr, u8 *daddr, u32 alen, u16 sport, u16 dport);

static __always_inline void handle(struct __sk_buff *skb, int egress)
{
	u64 ipw[5]; // 8-byte aligned: the IPv6 addresses are hashed as u64 words
	u32 l4w[5];
	u8 *ip = (u8 *)ipw, *l4 = (u8 *)l4w;
	u32 l4off;
	u8 proto;
	u8 *saddr, *daddr;
	u32 alen;

	if (load_hdr(skb, 0, ip, 20) < 0)
		return;
	u8 version = ip[0] >> 4;
	if (version == 4) {
		l4off = (ip[0] & 0xf) * 4;
		if (l4off < 20)
			return;
		if (((ip[6] << 8) | ip[7]) & 0x1fff) { // non-first fragment
			stat_inc(STAT_NOT_PARSED);
			return;
		}
		proto = ip[9];
		saddr = &ip[12];
		daddr = &ip[16];
		alen = 4;
	} else if (version == 6) {
		if (load_hdr(skb, 0, ip, 40) < 0)
			return;
		proto = ip[6];
		l4off = 40;
#pragma clang loop unroll(full)
		for (int i = 0; i < IPV6_EXT_MAX; i++) {
			if (proto != IPPROTO_HOPOPTS && proto != IPPROTO_ROUTING && proto != IPPROTO_DSTOPTS)
				break;
			u16 extw;
			u8 *ext = (u8 *)&extw;
			if (load_hdr(skb, l4off, ext, 2) < 0)
				return;
			proto = ext[0];
			l4off += ((u32)ext[1] + 1) * 8;
		}
		if (proto == IPPROTO_FRAGMENT || proto == IPPROTO_HOPOPTS ||
		    proto == IPPROTO_ROUTING || proto == IPPROTO_DSTOPTS) {
			stat_inc(STAT_NOT_PARSED);
			return;
		}
		saddr = &ip[8];
		daddr = &ip[24];
		alen = 16;
	} else {
		return;
	}

	u32 payload;
	if (proto == IPPROTO_UDP) {
		if (load_hdr(skb, l4off, l4, 8) < 0)
			return;
		payload = l4off + 8;
	} else if (proto == IPPROTO_TCP) {
		if (load_hdr(skb, l4off, l4, 20) < 0)
			return;
		u32 doff = (l4[12] >> 4) * 4;
		if (doff < 20)
			return;
		payload = l4off + doff;
	} else {
		return;
	}
	u16 sport = (l4[0] << 8) | l4[1];
	u16 dport = (l4[2] << 8) | l4[3];
	if (sport != DNS_PORT && dport != DNS_PORT)
		return;

	int role;
	if (egress)
		role = dport == DNS_PORT ? ROLE_CLIENT_QUERY : ROLE_SERVER_RESPONSE;
	else
		role = sport == DNS_PORT ? ROLE_CLIENT_RESPONSE : ROLE_SERVER_QUERY;

#ifdef ABLATE_AFTER_PORTS
	return;
#endif
	handle_dns(skb, egress, role, proto, payload, saddr, daddr, alen, sport, dport);
}

static __always_inline void count_client(struct __sk_buff *skb, int role, u8 proto, u32 dns_off, u64 n,
					 u8 *saddr, u8 *daddr, u32 alen, u16 sport, u16 dport,
					 u64 cgroup_id, struct pod_counters *pc, u32 sample_shift, u32 prev_shift, u32 sbuf);

// pod_counters_of finds the counters a cgroup already has, in its fast-path
// slot or in pod_stats, and its latency sampling (both shifts 0 without a
// slot); 0 when it has none.
static __always_inline struct pod_counters *pod_counters_of(u64 cgroup_id, u32 *shift, u32 *prev_shift)
{
	u32 i = (u32)cgroup_id & pod_slot_mask;
	struct pod_slot *owner = bpf_map_lookup_elem(&pod_slot_owner, &i);
	*shift = 0;
	*prev_shift = 0;
	if (owner && owner->cgroup_id == cgroup_id) {
		struct pod_counters *pc = bpf_map_lookup_elem(&pod_slot_counters, &i);
		if (pc) {
			*shift = owner->latency_sample_shift & 15;
			*prev_shift = owner->prev_sample_shift & 15;
			return pc;
		}
	}
	return bpf_map_lookup_elem(&pod_stats, &cgroup_id);
}

// charge_lost_query counts a pending query that left the in-flight table
// unanswered (timed out, or evicted) on the pod that sent it.
static __always_inline void charge_lost_query(u32 cgroup, int timed_out)
{
	if (!cgroup)
		return;
	u32 shift, prev_shift;
	struct pod_counters *pc = pod_counters_of(cgroup, &shift, &prev_shift);
	if (!pc)
		return;
	if (timed_out)
		pc->timeouts += 1ULL << shift;
	else
		pc->evicted += 1ULL << shift;
}

// query_key hashes what identifies a query and its answer: both addresses,
// both ports, the DNS id and the protocol.
static __always_inline u64 query_key(u64 seed, u8 *client, u8 *server, u32 alen, u64 client_port, u64 server_port,
				     u64 dns_id, u8 proto)
{
	u64 kh = seed;
	if (alen == 4) {
		kh = mix64(kh, (u64)*(u32 *)client | (u64)*(u32 *)server << 32);
	} else {
		kh = mix64(kh, *(u64 *)client);
		kh = mix64(kh, *(u64 *)(client + 8));
		kh = mix64(kh, *(u64 *)server);
		kh = mix64(kh, *(u64 *)(server + 8));
	}
	return mix64(kh, client_port | server_port << 16 | dns_id << 32 | (u64)proto << 48);
}

// Salts a server pod's query keys apart from its clients': with no address
// translation between them, a client and a server on one node see the same
// addresses, ports and id.
#define SERVER_KEY_SALT 0x5e7e5e7e5e7e5e7eULL

// count_server counts a message a server pod (CoreDNS) received (query) or
// sent (response), from its header: the response's rcode, and the time the
// server took, from the query arriving to its response leaving (1 in 2^shift
// of the pod's queries, chosen by the key's hash like a client's).
static __always_inline void count_server(int role, u8 proto, u8 *h, u8 *saddr, u8 *daddr, u32 alen, u16 sport,
					 u16 dport, struct pod_counters *pc, u32 shift, u32 prev_shift)
{
	int query = role == ROLE_SERVER_QUERY;
	if (query) {
		pc->server_queries++;
	} else {
		pc->server_responses++;
		pc->served_rcode[rcode_slot(h[3] & 0xf)]++;
	}
#ifdef ABLATE_LATENCY
	return;
#endif
	u64 kh = query_key(HASH_SEED ^ SERVER_KEY_SALT, query ? saddr : daddr, query ? daddr : saddr, alen,
			   query ? sport : dport, query ? dport : sport, (h[0] << 8) | h[1], proto);
	u32 lookup_shift = shift < prev_shift ? shift : prev_shift;
	if ((kh >> 54) & ((1ULL << (query ? shift : lookup_shift)) - 1))
		return;
	u32 fp = (u32)kh | 1;
	u32 idx = (u32)(kh >> 32) & inflight_mask;
	struct inflight_set *set = bpf_map_lookup_elem(&server_inflight, &idx);
	if (!set)
		return;
	u64 now = bpf_ktime_get_ns();
	u32 hit = INFLIGHT_WAYS;
#pragma clang loop unroll(full)
	for (u32 w = 0; w < INFLIGHT_WAYS; w++)
		if (set->way[w].fingerprint == fp)
			hit = w;
	if (!query) {
		if (hit >= INFLIGHT_WAYS)
			return;
		struct inflight_slot *slot = &set->way[hit & (INFLIGHT_WAYS - 1)];
		u64 sent = slot->sent_ns;
		if (!sent)
			return;
		slot->sent_ns = 0;
		u64 age = now > sent ? now - sent : 0;
		pc->served_latency_log2_us[log2_bucket(age / 1000)] += 1ULL << shift;
		return;
	}
	u32 victim = hit;
	if (hit < INFLIGHT_WAYS) {
		u64 sent = set->way[hit & (INFLIGHT_WAYS - 1)].sent_ns;
		if (sent && now - sent < dns_timeout_ns)
			return; // a retransmitted query: keep the first arrival
	} else {
		u64 oldest = ~0ULL;
#pragma clang loop unroll(full)
		for (u32 w = 0; w < INFLIGHT_WAYS; w++) {
			u64 sent = set->way[w].sent_ns;
			if (sent < oldest) {
				oldest = sent;
				victim = w;
			}
		}
	}
	struct inflight_slot *slot = &set->way[victim & (INFLIGHT_WAYS - 1)];
	slot->fingerprint = fp;
	slot->cgroup = 0;
	slot->sent_ns = now;
}

// server_of finds (or claims) the pod's counters for a server address and
// port on this CPU; 0 when its SERVER_SLOTS are taken by other servers. The
// tag is written last: a softirq claiming a slot between an interrupted
// program's writes is the only way two servers can mix (a pod's first
// packets to them, on one CPU).
static __always_inline struct server_counters *server_of(struct pod_counters *pc, u8 *addr, u32 alen, u16 port)
{
	u64 a0, a1 = 0;
	if (alen == 4) {
		a0 = *(u32 *)addr;
	} else {
		a0 = *(u64 *)addr;
		a1 = *(u64 *)(addr + 8);
	}
	u32 tag = port | alen << 16 | 1 << 24;
	u32 free = SERVER_SLOTS;
#pragma clang loop unroll(full)
	for (u32 i = 0; i < SERVER_SLOTS; i++) {
		struct server_counters *sc = &pc->servers[i];
		if (sc->tag == tag && sc->addr[0] == a0 && sc->addr[1] == a1)
			return sc;
		if (sc->tag == 0 && free == SERVER_SLOTS)
			free = i;
	}
	if (free == SERVER_SLOTS)
		return 0;
	struct server_counters *sc = &pc->servers[free & (SERVER_SLOTS - 1)];
	sc->addr[0] = a0;
	sc->addr[1] = a1;
	sc->tag = tag;
	return sc;
}

static __always_inline void handle_dns(struct __sk_buff *skb, int egress, int role, u8 proto, u32 payload,
				       u8 *saddr, u8 *daddr, u32 alen, u16 sport, u16 dport)
{
	u32 len = skb->len;
	u32 dns_off = payload;
	u32 msg_max = 0xffff;
	if (proto == IPPROTO_TCP) {
		if (payload >= len) // handshake, ACK, FIN: no DNS bytes
			return;
		u16 pfxw;
		u8 *pfx = (u8 *)&pfxw;
		if (load_hdr(skb, payload, pfx, 2) < 0)
			msg_max = 0; // a 1-byte segment: malformed below
		else
			msg_max = (pfx[0] << 8) | pfx[1];
		dns_off = payload + 2;
	}

	u64 cgroup_id = bpf_skb_cgroup_id(skb);
#ifdef ABLATE_AFTER_CGROUP_ID
	if (cgroup_id == 1)
		stat_inc(STAT_POD_OVERFLOW);
	return;
#endif
	u32 sample_shift, prev_shift; // 0 for pods without a slot: every query is timed
	struct pod_counters *pc = pod_counters_of(cgroup_id, &sample_shift, &prev_shift);
	if (!pc) {
		u32 zero = 0;
		struct pod_counters *init = bpf_map_lookup_elem(&zero_pod, &zero);
		if (!init)
			return;
		long err = bpf_map_update_elem(&pod_stats, &cgroup_id, init, BPF_NOEXIST);
		if (err && err != -EEXIST) {
			stat_inc(STAT_POD_OVERFLOW);
			return;
		}
		pc = bpf_map_lookup_elem(&pod_stats, &cgroup_id);
		if (!pc)
			return;
	}
	stat_inc(STAT_DNS_MESSAGES);
	if (egress)
		pc->bytes_out += len;
	else
		pc->bytes_in += len;

#ifdef ABLATE_AFTER_POD
	return;
#endif
	u64 n = len - dns_off; // wraps if dns_off > len: capped, then the load fails
	if (n > msg_max)
		n = msg_max;

	// A server pod's messages are counted from their header alone (direction
	// bit, a question present, room for the smallest question): the names
	// are counted on the client side, and walking the question of every
	// query a busy DNS server receives and answers was ~10 % of the probe's
	// cost. A message whose header fails is malformed.
	if (role == ROLE_SERVER_QUERY || role == ROLE_SERVER_RESPONSE) {
		u32 hw[3];
		u8 *h = (u8 *)hw;
		if (dns_off > len || n < 12 + 5 || load_hdr(skb, dns_off, hw, 12) < 0)
			goto malformed;
		if ((h[2] >> 7) != (role == ROLE_SERVER_RESPONSE) || ((h[4] << 8) | h[5]) == 0)
			goto malformed;
		count_server(role, proto, h, saddr, daddr, alen, sport, dport, pc, sample_shift, prev_shift);
		return;
	malformed:
		stat_inc(STAT_MALFORMED);
		pc->malformed++;
		return;
	}

	// Only a client's messages use a scratch buffer, so only they need the
	// nesting guard (a per-CPU line that missed the cache under load).
	u32 zero = 0;
	u32 *depth = bpf_map_lookup_elem(&nesting, &zero);
	if (!depth)
		return;
	u32 sbuf = *depth & 1;
	*depth = sbuf + 1;
	count_client(skb, role, proto, dns_off, n, saddr, daddr, alen, sport, dport, cgroup_id, pc, sample_shift, prev_shift,
		     sbuf);
	*depth = sbuf;
}

// trace_message sends one client message of a traced pod to userspace, when
// the key's hash picks it (1 in 2^shift of the pod's queries, with their
// answers).
static __always_inline void trace_message(struct scratch *s, u8 kind, int shift, u64 kh, u64 cgroup_id, u64 latency_ns,
					  u8 *server, u32 alen, u64 server_port, u64 client_port, u64 dns_id, int qtype,
					  u8 rcode, u8 proto)
{
	if ((kh >> 40) & ((1ULL << shift) - 1))
		return;
	struct trace_event *e = bpf_ringbuf_reserve(&trace_events, sizeof(*e), 0);
	if (!e) {
		stat_inc(STAT_TRACE_LOST);
		return;
	}
	e->time_ns = bpf_ktime_get_ns();
	e->cgroup_id = cgroup_id;
	e->latency_ns = latency_ns;
	__builtin_memset(e->server, 0, sizeof(e->server));
	if (alen == 4)
		__builtin_memcpy(e->server, server, 4);
	else
		__builtin_memcpy(e->server, server, 16);
	e->server_port = server_port;
	e->client_port = client_port;
	e->dns_id = dns_id;
	e->qtype = qtype;
	e->ancount = (s->nv.dns_header[6] << 8) | s->nv.dns_header[7];
	e->wire_len = s->nv.wire_len;
	e->kind = kind;
	e->rcode = rcode;
	e->alen = alen;
	e->proto = proto;
	__builtin_memcpy(e->wire, s->nv.wire, WIRE_MAX);
	bpf_ringbuf_submit(e, 0);
}

// count_client counts a message a client pod sent (query) or received
// (response): its question, name, rcode and latency. A response is counted
// only once it is known to answer a query the pod sent (or could not be
// checked, see the sampling below); otherwise it is unsolicited.
static __always_inline void count_client(struct __sk_buff *skb, int role, u8 proto, u32 dns_off, u64 n,
					 u8 *saddr, u8 *daddr, u32 alen, u16 sport, u16 dport,
					 u64 cgroup_id, struct pod_counters *pc, u32 sample_shift, u32 prev_shift, u32 sbuf)
{
	// The header and the question, loaded by parse_message in one go.
	if (n > 12 + QUESTION_MAX)
		n = 12 + QUESTION_MAX;
	int qtype = parse_message(skb, dns_off, n, sbuf);
	if (qtype < 0)
		goto malformed;
	struct scratch *s = bpf_map_lookup_elem(&scratch_buf, &sbuf);
	if (!s)
		return;
	u8 *dh = s->nv.dns_header;
	u8 is_response = dh[2] >> 7;
	u8 rcode = dh[3] & 0xf;
	u16 qdcount = (dh[4] << 8) | dh[5];
	if (qdcount == 0)
		goto malformed;
	if (is_response != (role == ROLE_CLIENT_RESPONSE || role == ROLE_SERVER_RESPONSE))
		goto malformed;
	u32 wire_len = s->nv.wire_len;
	// Tracing: -1 while the pod is not traced.
	int trace_shift = -1;
	u8 answer_kind = TRACE_UNCHECKED;
	u64 answer_latency = 0;
	u8 timed = 0;
	u64 kh = HASH_SEED;
	u32 zero = 0;
	u32 *tracing = bpf_map_lookup_elem(&trace_on, &zero);
	if (tracing && *tracing) {
		u32 *shift = bpf_map_lookup_elem(&traced, &cgroup_id);
		if (shift)
			trace_shift = *shift & 31;
	}

	if (role == ROLE_CLIENT_QUERY) {
		pc->queries++;
		if (proto == IPPROTO_TCP)
			pc->tcp_queries++;
		pc->qtype[qtype_slot(qtype)]++;
		struct server_counters *sc = server_of(pc, daddr, alen, dport);
		if (sc)
			sc->queries++;
		else
			pc->other_server_queries++;
#ifndef ABLATE_NAMES
		if (hash_name(sbuf) == 0)
			name_add(cgroup_id, s->name_hash, s, wire_len, 0);
#endif
	} else if (role != ROLE_CLIENT_RESPONSE) {
		return; // server roles were counted in handle_dns
	}

#ifdef ABLATE_LATENCY
	if (role == ROLE_CLIENT_QUERY)
		return;
	goto answered;
#endif
	// Remember the query by (client address, server address, client port,
	// server port, DNS id, protocol) and match the response that comes back
	// with the same key. The key is hashed straight from the headers.
	u8 *server = role == ROLE_CLIENT_QUERY ? daddr : saddr;
	u64 client_port = role == ROLE_CLIENT_QUERY ? sport : dport;
	u64 server_port = role == ROLE_CLIENT_QUERY ? dport : sport;
	u64 dns_id = (dh[0] << 8) | dh[1];
	kh = query_key(HASH_SEED, role == ROLE_CLIENT_QUERY ? saddr : daddr, server, alen, client_port, server_port, dns_id,
		       proto);
	u32 fp = (u32)kh | 1; // never 0, so a zeroed way never matches
	if (role == ROLE_CLIENT_QUERY && trace_shift >= 0)
		trace_message(s, TRACE_QUERY, trace_shift, kh, cgroup_id, 0, server, alen, server_port, client_port, dns_id, qtype, 0,
			      proto);
	// A busy pod's queries are sampled: the two clock reads and the pending
	// set of each timed pair were a third of the probe's cost per DNS packet
	// under load. The top bits of the key's hash (the best mixed: a
	// multiply carries upwards) pick the timed queries; the set index uses
	// bits 32 and up, 2^22 sets at most. The answer to an untimed query
	// cannot be checked and is counted as it comes.
	u64 pick = kh >> 54;
	u32 lookup_shift = sample_shift < prev_shift ? sample_shift : prev_shift;
	u32 check_shift = sample_shift < prev_shift ? prev_shift : sample_shift;
	if (pick & ((1ULL << (role == ROLE_CLIENT_QUERY ? sample_shift : lookup_shift)) - 1)) {
		if (role == ROLE_CLIENT_QUERY)
			return;
		goto answered;
	}
	u32 idx = (u32)(kh >> 32) & inflight_mask;
	struct inflight_set *set = bpf_map_lookup_elem(&inflight, &idx);
	if (!set)
		return;
	u64 now = bpf_ktime_get_ns();

	u32 hit = INFLIGHT_WAYS;
#pragma clang loop unroll(full)
	for (u32 w = 0; w < INFLIGHT_WAYS; w++)
		if (set->way[w].fingerprint == fp)
			hit = w;
	u64 hit_sent = hit < INFLIGHT_WAYS ? set->way[hit & (INFLIGHT_WAYS - 1)].sent_ns : 0;
	// Ages are clamped at 0: a query stamped on another CPU can look a few ns
	// younger than now.
	u64 hit_age = now > hit_sent ? now - hit_sent : 0;

	if (role == ROLE_CLIENT_QUERY) {
		u32 victim = hit;
		if (hit_sent) {
			if (hit_age < dns_timeout_ns) { // retransmit: keep the first send time
				stat_inc(STAT_INFLIGHT_DUPLICATES);
				return;
			}
			stat_inc(STAT_INFLIGHT_EXPIRED);
			charge_lost_query(set->way[hit & (INFLIGHT_WAYS - 1)].cgroup, 1);
		} else if (hit >= INFLIGHT_WAYS) {
			// A free way (sent 0), else the oldest query of the set.
			u64 oldest = ~0ULL;
#pragma clang loop unroll(full)
			for (u32 w = 0; w < INFLIGHT_WAYS; w++) {
				u64 sent = set->way[w].sent_ns;
				if (sent < oldest) {
					oldest = sent;
					victim = w;
				}
			}
			if (oldest) { // a query never answered
				struct inflight_slot *old = &set->way[victim & (INFLIGHT_WAYS - 1)];
				if (now - oldest < dns_timeout_ns || oldest > now) {
					stat_inc(STAT_INFLIGHT_EVICTED);
					charge_lost_query(old->cgroup, 0);
					struct inflight_evicted_set *ev = bpf_map_lookup_elem(&inflight_evicted, &idx);
					if (ev)
						ev->fingerprint[victim & (INFLIGHT_WAYS - 1)] = old->fingerprint;
				} else {
					stat_inc(STAT_INFLIGHT_EXPIRED);
					charge_lost_query(old->cgroup, 1);
				}
			}
		}
		struct inflight_slot *slot = &set->way[victim & (INFLIGHT_WAYS - 1)];
		slot->fingerprint = fp;
		slot->cgroup = cgroup_id >> 32 ? 0 : (u32)cgroup_id;
		slot->sent_ns = now;
		stat_inc(STAT_INFLIGHT_INSERTS);
		return;
	}

	if (hit_sent) {
		struct inflight_slot *slot = &set->way[hit & (INFLIGHT_WAYS - 1)];
		slot->sent_ns = 0;
		if (hit_age >= dns_timeout_ns) { // answered, but after the resolver gave up
			stat_inc(STAT_LATE_ANSWERS);
			pc->timeouts += 1ULL << sample_shift;
			answer_kind = TRACE_LATE;
		} else {
			stat_inc(STAT_INFLIGHT_MATCHED);
			answer_kind = TRACE_ANSWER;
		}
		answer_latency = hit_age;
		timed = 1;
		pc->latency_log2_us[log2_bucket(hit_age / 1000)] += 1ULL << sample_shift;
		goto answered;
	}
	if (pick & ((1ULL << check_shift) - 1))
		goto answered; // sent while the pod's queries were timed 1 in 2^check_shift
	struct inflight_evicted_set *ev = bpf_map_lookup_elem(&inflight_evicted, &idx);
	if (ev) {
#pragma clang loop unroll(full)
		for (u32 w = 0; w < INFLIGHT_WAYS; w++) {
			if (ev->fingerprint[w] == fp) {
				ev->fingerprint[w] = 0;
				stat_inc(STAT_EVICTED_ANSWERS);
				goto answered;
			}
		}
	}
	stat_inc(STAT_UNMATCHED_RESPONSES);
	pc->unsolicited++;
	if (trace_shift >= 0)
		trace_message(s, TRACE_UNSOLICITED, trace_shift, kh, cgroup_id, 0, server, alen, server_port, client_port, dns_id,
			      qtype, rcode, proto);
	return;

answered:
	if (trace_shift >= 0)
		trace_message(s, answer_kind, trace_shift, kh, cgroup_id, answer_latency, server, alen, server_port, client_port,
			      dns_id, qtype, rcode, proto);
	pc->responses++;
	pc->rcode[rcode_slot(rcode)]++;
	struct server_counters *sc = server_of(pc, saddr, alen, sport);
	if (sc) {
		sc->answers++;
		if (rcode == 3)
			sc->nxdomain++;
		else if (rcode == 2)
			sc->servfail++;
		if (timed) {
			sc->timed++;
			sc->latency_sum_us += answer_latency / 1000;
		}
	} else {
		pc->other_server_answers++;
	}
#ifndef ABLATE_NAMES
	if (rcode == 3 && hash_name(sbuf) == 0)
		name_add(cgroup_id, s->name_hash, s, wire_len, 1);
#endif
	return;

malformed:
	stat_inc(STAT_MALFORMED);
	pc->malformed++;
}

SEC("cgroup_skb/egress")
int dns_egress(struct __sk_buff *skb)
{
	handle(skb, 1);
	return 1; // observe only: always pass
}

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	handle(skb, 0);
	return 1;
}
