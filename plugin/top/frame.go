// Package top holds the client side of `kubectl isoobs top`: the output
// schema, the merge of frames from one or many daemons, sorting, and the
// fan-in of daemon streams. It knows nothing about cobra or terminals.
package top

import (
	"time"
)

// Frame is one merged view of DNS activity, the unit printed by every output
// format. Its JSON/YAML field names are a stable public schema (one object per
// line with -o json), independent of the protobuf wire format.
type Frame struct {
	Time time.Time `json:"time"`
	// Counters in rows cover [Since, Time].
	Since           time.Time `json:"since"`
	IntervalSeconds float64   `json:"intervalSeconds"`
	// Nodes whose daemons contributed to this frame.
	Nodes []string `json:"nodes"`
	// MissingNodes are nodes whose daemons were asked but did not answer:
	// the frame is a partial result without them.
	MissingNodes []MissingNode `json:"missingNodes"`
	// StaleNodes are nodes whose streams are open but sent no frame for three intervals (a
	// stalled port-forward, an overloaded node): their last numbers are left out rather than
	// shown as current.
	StaleNodes []StaleNode `json:"staleNodes"`
	GroupBy    string      `json:"groupBy"`
	Sort       string      `json:"sort"`
	Rows       []Row       `json:"rows"`
	// Total covers every row, including rows cut by --limit.
	Total    Row         `json:"total"`
	TopNames []NameCount `json:"topNames"`
	// Rows not shown because of --limit (on the daemons and here).
	Truncated int      `json:"truncated"`
	Warnings  []string `json:"warnings"`
	// NameFilter is set under --name/--zone: rows count only matching queries, from the
	// stream's start.
	NameFilter *NameFilter `json:"nameFilter,omitempty"`
	// NameOverflow (with NameFilter) is how many name increments the daemons' probes could not
	// count because their name tables were full: filtered counts may be low by up to this.
	NameOverflow uint64 `json:"nameOverflow,omitempty"`
	// LookBackSeconds is --since: counters cover the daemons' history over [Since, Time]
	// (rates are its average), and rows carry firstSeen/lastSeen.
	LookBackSeconds float64 `json:"lookBackSeconds,omitempty"`
	// ServerFilter is --server: rows are the ones that sent queries to that server.
	ServerFilter string `json:"serverFilter,omitempty"`
}

// Row is the DNS activity of one group (a pod, workload, namespace, query
// name or node, see Frame.GroupBy).
type Row struct {
	Node         string `json:"node"`
	Namespace    string `json:"namespace"`
	Pod          string `json:"pod"`
	PodUID       string `json:"podUID"`
	Workload     string `json:"workload"`
	WorkloadKind string `json:"workloadKind"`
	// QName is set when grouping by query name.
	QName string `json:"qname"`
	// Server is set when grouping by server: the address the client pods sent to (IP, or
	// IP:port when the port is not 53). Namespace/Pod/Workload are then the server pod's,
	// when a daemon reported a DNS server pod with this address.
	Server string `json:"server,omitempty"`
	// Share (grouped by server) is the part of all client queries sent to this server, 0..1;
	// LatencyAvgMs is the mean latency the clients saw from it (LatencyP50Ms/LatencyP99Ms are
	// then the server pod's own, server-side).
	Share        float64 `json:"share,omitempty"`
	LatencyAvgMs float64 `json:"latencyAvgMs,omitempty"`
	Cgroup       string  `json:"cgroup"`
	CgroupID     uint64  `json:"cgroupID"`
	// Pods merged into this row.
	Pods               uint32  `json:"pods"`
	Queries            uint64  `json:"queries"`
	QPS                float64 `json:"qps"`
	Responses          uint64  `json:"responses"`
	ResponsesPerSecond float64 `json:"responsesPerSecond"`
	NoError            uint64  `json:"noerror"`
	NXDomain           uint64  `json:"nxdomain"`
	ServFail           uint64  `json:"servfail"`
	Refused            uint64  `json:"refused"`
	OtherRcode         uint64  `json:"otherRcode"`
	Malformed          uint64  `json:"malformed"`
	// Timeouts are queries without an answer within the daemon's --dns-timeout (5 s by
	// default): still waiting, answered later, or never answered.
	Timeouts     uint64  `json:"timeouts"`
	TimeoutsRate float64 `json:"timeoutsRate"`
	// Unsolicited are answers that matched no query the pod had pending (forged, or a
	// server's duplicate answer); they are not in responses, the rcodes or topNames.
	Unsolicited uint64 `json:"unsolicited"`
	// Evicted are queries pushed out of a node's full in-flight table before their answer
	// (neither timed nor checked; their answers are still counted).
	Evicted      uint64      `json:"evicted"`
	LatencyP50Ms float64     `json:"latencyP50Ms"`
	LatencyP99Ms float64     `json:"latencyP99Ms"`
	TopNames     []NameCount `json:"topNames"`
	// TopZones are the heaviest parent domains of the names ("*.crawl.example"): exact
	// where a random-subdomain flood makes every single name rare.
	TopZones      []NameCount       `json:"topZones"`
	QueriesByType map[string]uint64 `json:"queriesByType"`
	BytesOut      uint64            `json:"bytesOut"`
	BytesIn       uint64            `json:"bytesIn"`
	// Queries answered by this group (it is a DNS server such as CoreDNS).
	ServedQueries   uint64 `json:"servedQueries"`
	ServedResponses uint64 `json:"servedResponses"`
	// What a DNS server group answered: NXDOMAIN, SERVFAIL and REFUSED responses sent, and the
	// time from a query arriving to its response leaving (server-side latency).
	ServedNXDomain     uint64  `json:"servedNXDomain,omitempty"`
	ServedServFail     uint64  `json:"servedServFail,omitempty"`
	ServedRefused      uint64  `json:"servedRefused,omitempty"`
	ServedLatencyP50Ms float64 `json:"servedLatencyP50Ms,omitempty"`
	ServedLatencyP99Ms float64 `json:"servedLatencyP99Ms,omitempty"`
	// Servers are the servers the row's queries went to, most queried first.
	Servers []Server `json:"servers,omitempty"`
	// PodIPs are the addresses of the row's DNS server pods (how clients' servers are named).
	PodIPs []string          `json:"podIPs,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Sources that counted this row: "ebpf" (the daemon's probe), "hubble" (Cilium's flows).
	Sources []string `json:"sources,omitempty"`
	// Identity is the Cilium security identity (from Hubble; 0 when unknown or mixed).
	Identity uint32 `json:"identity,omitempty"`
	// PolicyDenied are DNS queries Hubble saw denied by policy.
	PolicyDenied     uint64  `json:"policyDenied,omitempty"`
	PolicyDeniedRate float64 `json:"policyDeniedRate,omitempty"`
	// ProxyLatency* are Cilium's DNS proxy latency (Hubble), apart from the probe's latency.
	ProxyLatencyP50Ms float64 `json:"proxyLatencyP50Ms,omitempty"`
	ProxyLatencyP99Ms float64 `json:"proxyLatencyP99Ms,omitempty"`
	// FirstSeen and LastSeen (--since only) are when the row's queries started and ended within
	// the look-back window: the start of the first and the end of the last history sample that
	// counted queries (samples are one daemon interval apart for the last minute, 10 s before).
	FirstSeen *time.Time `json:"firstSeen,omitempty"`
	LastSeen  *time.Time `json:"lastSeen,omitempty"`

	// latencyLog2Us is the merged log2 latency histogram; it stays out of
	// the output schema but lets frames be merged again exactly.
	latencyLog2Us       []uint64
	servedLatencyLog2Us []uint64
}

// MissingNode is a node left out of a frame, and why.
type MissingNode struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// NameCount is how often one query name was asked.
type NameCount struct {
	Name     string `json:"name"`
	Queries  uint64 `json:"queries"`
	NXDomain uint64 `json:"nxdomain"`
	// Error bounds the overestimate of Queries (Space-Saving): the true count
	// is in [Queries-Error, Queries].
	Error uint64 `json:"error,omitempty"`
}

// Errors counts responses that were not NOERROR.
func (r *Row) Errors() uint64 {
	return r.NXDomain + r.ServFail + r.Refused + r.OtherRcode
}

// LatencyHistogram returns a copy of the row's merged log2 latency histogram
// (bucket i counts [2^i, 2^(i+1)) µs).
func (r *Row) LatencyHistogram() []uint64 {
	return append([]uint64(nil), r.latencyLog2Us...)
}

// DisplayName is the row's identity under the frame's grouping, used for
// the name sort and in the live view.
func (r *Row) DisplayName(groupBy string) string {
	switch groupBy {
	case GroupByWorkload:
		if r.Workload == "" {
			return r.Namespace + "/" + r.Pod
		}
		return r.Namespace + "/" + r.Workload
	case GroupByNamespace:
		return r.Namespace
	case GroupByQName:
		return r.QName
	case GroupByNode:
		return r.Node
	case GroupByServer:
		if r.Pod != "" {
			return r.Server + " (" + r.Namespace + "/" + r.Pod + ")"
		}
		return r.Server
	default:
		if r.Pod == "" {
			return r.Cgroup
		}
		return r.Namespace + "/" + r.Pod
	}
}

// StaleNode is a node left out of a frame because its stream stalled.
type StaleNode struct {
	Node string `json:"node"`
	// LastFrame is when its last frame arrived.
	LastFrame time.Time `json:"lastFrame"`
}
