package daemon

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"context"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

type server struct {
	isoobsv1.UnimplementedDaemonServer
	d *Daemon
}

// Top streams one frame every request interval (whole collector ticks), starting with the
// next tick, until the client goes away.
func (s *server) Top(req *isoobsv1.TopRequest, stream isoobsv1.Daemon_TopServer) error {
	c := s.d.coll
	q, err := newTopQuery(req, c.cfg.Interval)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	every := frameTicks(req, c.cfg.Interval)
	ticks := c.subscribe()
	defer c.unsubscribe(ticks)
	c.startStream(q)
	if q.sink != nil {
		defer c.removeSink(q.sink)
	}
	n := 0
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-ticks:
		}
		n++
		if n%every != 0 {
			continue
		}
		if err := stream.Send(c.frame(q)); err != nil {
			return err
		}
	}
}

// Status describes the daemon, its probes and every loss counter.
func (s *server) Status(context.Context, *isoobsv1.StatusRequest) (*isoobsv1.StatusResponse, error) {
	d := s.d
	resp := &isoobsv1.StatusResponse{
		Node:          d.cfg.NodeName,
		Kernel:        d.kernel,
		Version:       Version,
		CountingSince: timestamppb.New(d.coll.started),
		CgroupRoot:    d.cfg.CgroupRoot,
		Interval:      durationpb.New(d.cfg.Interval),
	}
	for _, a := range d.src.Attachments() {
		ps := &isoobsv1.ProbeStatus{Name: a.Program, Hook: a.Hook, Target: a.Target, Attached: a.Err == nil}
		if a.Err != nil {
			ps.Error = a.Err.Error()
		}
		resp.Probes = append(resp.Probes, ps)
	}
	if d.watcher != nil {
		resp.KubernetesConnected, resp.KubernetesError = d.watcher.Connected()
	} else {
		resp.KubernetesError = "no Kubernetes API configured: rows show pod UIDs and cgroup paths"
	}

	c := d.coll
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := c.stats
	for _, m := range st.Maps() {
		resp.Maps = append(resp.Maps, &isoobsv1.MapStatus{Name: m.Name, Entries: uint64(m.Entries), MaxEntries: uint64(m.Max)})
	}
	resp.Maps = append(resp.Maps, &isoobsv1.MapStatus{Name: "tracked_pods", Entries: uint64(len(c.subjects)), MaxEntries: uint64(c.cfg.MaxTrackedPods)})
	var pods uint32
	for _, sub := range c.subjects {
		if sub.uid != "" {
			pods++
		}
	}
	resp.PodsKnown = pods
	resp.Counters = map[string]uint64{
		"ticks":                      c.tickNo + 1,
		"probe_pod_map_full":         st.PodOverflow,
		"probe_name_table_full":      st.NameOverflow,
		"probe_inflight_inserted":    st.InflightInserted,
		"probe_inflight_duplicates":  st.InflightDuplicates,
		"probe_inflight_matched":     st.InflightMatched,
		"probe_latency_sampled_pods": uint64(st.LatencySampledPods),
		"probe_inflight_evicted":     st.InflightEvicted,
		"probe_inflight_errors":      st.InflightErrors,
		"probe_unmatched_responses":  st.UnmatchedResponses,
		"probe_malformed":            st.Malformed,
		"probe_not_parsed":           st.NotParsed,
		"probe_dns_messages":         st.DNSMessages,
		"host_queries":               c.hostQueries,
		"host_cgroups":               c.hostCgroups,
		"untracked_pods":             c.untrackedPods,
		"untracked_pod_queries":      c.untrackedQueries,
		"unresolved_cgroups":         c.unresolvedCgroups,
		"untracked_name_queries":     c.droppedNameQueries,
		"read_errors":                c.readErrors,
		"pods_forgotten":             c.subjectsDeleted,
		"kernel_entries_forgotten":   c.kernelEntriesForgot,
		"node_names_evictions":       c.nodeNames.names.Evictions(),
		"cgroups_known":              uint64(len(c.cgroups)),
		"stats_errors":               boolCount(c.statsErr != nil),
	}
	if c.lastTick.IsZero() {
		resp.Counters["ticks"] = 0
	}
	resp.Hubble = d.hubbleStatus()
	if c.hub != nil {
		resp.Counters["hubble_untracked_pods"] = c.hub.untrackedPods
		resp.Counters["hubble_untracked_name_queries"] = c.hub.droppedNames
	}
	return resp, nil
}

func boolCount(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
