package hubblereplay

import (
	"context"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
	observerpb "github.com/isoobs/isoobs/proto/observer/observer"
	relaypb "github.com/isoobs/isoobs/proto/observer/relay"
)

// ObserverServiceName is the health-check service `hubble status` asks about (Cilium's
// pkg/hubble/api/v1.ObserverServiceName).
const ObserverServiceName = "hubble.server.Observer"

// Options configure a Server. Zero values mean the defaults.
type Options struct {
	// NodeName is reported by GetNodes and stamped on events without one. Default "replay-node".
	NodeName string
	// MaxFlows is the ring buffer capacity, like Hubble's --hubble-event-buffer-capacity.
	// Default 4095. Followers that fall further behind get a LostEvent, as from Hubble.
	MaxFlows int
	// Version is reported by ServerStatus and GetNodes.
	Version string
	// Address is reported by GetNodes.
	Address string
}

type entry struct {
	seq uint64
	ev  *observerpb.GetFlowsResponse
}

// Server is an observer.Observer serving published events from a ring buffer.
type Server struct {
	observerpb.UnimplementedObserverServer
	opts    Options
	started time.Time
	health  *health.Server

	mu      sync.Mutex
	ring    []entry // oldest first, at most MaxFlows
	next    uint64  // sequence number of the next event
	seen    uint64  // flows published
	changed chan struct{}
	// Streams counts GetFlows calls, Following those still running.
	streams, following int
}

// NewServer returns an empty server; Publish adds events.
func NewServer(opts Options) *Server {
	if opts.NodeName == "" {
		opts.NodeName = "replay-node"
	}
	if opts.MaxFlows <= 0 {
		opts.MaxFlows = 4095
	}
	if opts.Version == "" {
		opts.Version = "1.20.2+isoobs-replay"
	}
	s := &Server{opts: opts, started: time.Now(), health: health.NewServer(), changed: make(chan struct{})}
	s.health.SetServingStatus(ObserverServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// Register adds the observer and health services to gs.
func (s *Server) Register(gs *grpc.Server) {
	observerpb.RegisterObserverServer(gs, s)
	healthpb.RegisterHealthServer(gs, s.health)
}

// Publish appends events (flows, lost-events notices) and wakes followers.
func (s *Server) Publish(events ...*observerpb.GetFlowsResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range events {
		if ev.GetNodeName() == "" {
			ev.NodeName = s.opts.NodeName
		}
		if ev.GetTime() == nil {
			if t := ev.GetFlow().GetTime(); t != nil {
				ev.Time = t
			} else {
				ev.Time = timestamppb.Now()
			}
		}
		if ev.GetFlow() != nil {
			s.seen++
		}
		s.ring = append(s.ring, entry{seq: s.next, ev: ev})
		s.next++
	}
	if over := len(s.ring) - s.opts.MaxFlows; over > 0 {
		s.ring = append(s.ring[:0:0], s.ring[over:]...)
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// PublishFlows wraps flows as GetFlowsResponses and publishes them.
func (s *Server) PublishFlows(flows ...*flowpb.Flow) {
	s.Publish(Events(flows...)...)
}

// Streams returns how many GetFlows calls were made and how many are following now.
func (s *Server) Streams() (total, following int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams, s.following
}

// after returns the ring entries from sequence number from on, how many were overwritten
// before the caller could read them, and a channel closed at the next Publish.
func (s *Server) after(from uint64) ([]entry, uint64, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lost uint64
	i := sort.Search(len(s.ring), func(i int) bool { return s.ring[i].seq >= from })
	if len(s.ring) > 0 && s.ring[0].seq > from {
		lost = s.ring[0].seq - from
	}
	return append([]entry(nil), s.ring[i:]...), lost, s.changed
}

// GetFlows implements observer.Observer: history per number/first/since/until, then with
// follow every newly published event, filtered by whitelist/blacklist, field mask applied.
func (s *Server) GetFlows(req *observerpb.GetFlowsRequest, stream observerpb.Observer_GetFlowsServer) error {
	white, err := compileFilters(req.GetWhitelist())
	if err != nil {
		return status.Errorf(codes.Unimplemented, "whitelist: %v", err)
	}
	black, err := compileFilters(req.GetBlacklist())
	if err != nil {
		return status.Errorf(codes.Unimplemented, "blacklist: %v", err)
	}
	mask, err := compileMask(req.GetFieldMask())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetFirst() && req.GetFollow() {
		return status.Error(codes.InvalidArgument, "first is incompatible with follow")
	}
	var since, until time.Time
	if t := req.GetSince(); t != nil {
		since = t.AsTime()
	}
	if t := req.GetUntil(); t != nil {
		until = t.AsTime()
	}
	keep := func(ev *observerpb.GetFlowsResponse) bool {
		f := ev.GetFlow()
		if f == nil {
			return true // lost-events and node-status notices go to every stream
		}
		if t := ev.GetTime().AsTime(); (!since.IsZero() && t.Before(since)) || (!until.IsZero() && t.After(until)) {
			return false
		}
		return (len(white) == 0 || white.any(f)) && !black.any(f)
	}
	send := func(ev *observerpb.GetFlowsResponse) error {
		if f := ev.GetFlow(); f != nil && mask != nil {
			ev = &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: mask.apply(f)}, NodeName: ev.GetNodeName(), Time: ev.GetTime()}
		}
		return stream.Send(ev)
	}

	s.mu.Lock()
	s.streams++
	s.mu.Unlock()
	history, _, changed := s.after(0)
	next := uint64(0)
	if len(history) > 0 {
		next = history[len(history)-1].seq + 1
	} else {
		s.mu.Lock()
		next = s.next
		s.mu.Unlock()
	}
	// Follow without number or since starts at the end, as Hubble does.
	if !(req.GetFollow() && req.GetNumber() == 0 && since.IsZero()) {
		var sel []*observerpb.GetFlowsResponse
		for _, e := range history {
			if keep(e.ev) {
				sel = append(sel, e.ev)
			}
		}
		if n := req.GetNumber(); n > 0 {
			sel = limitFlows(sel, n, req.GetFirst())
		}
		for _, ev := range sel {
			if err := send(ev); err != nil {
				return err
			}
		}
	}
	if !req.GetFollow() {
		return nil
	}
	s.mu.Lock()
	s.following++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.following--
		s.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
		var evs []entry
		var lost uint64
		evs, lost, changed = s.after(next)
		if lost > 0 {
			now := timestamppb.Now()
			if err := stream.Send(&observerpb.GetFlowsResponse{
				ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
					Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: lost, Cpu: wrapperspb.Int32(0), First: now, Last: now,
				}},
				NodeName: s.opts.NodeName, Time: now,
			}); err != nil {
				return err
			}
		}
		for _, e := range evs {
			next = e.seq + 1
			if keep(e.ev) {
				if err := send(e.ev); err != nil {
					return err
				}
			}
		}
	}
}

func (s *Server) counts() (numFlows, seen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.ring {
		if e.ev.GetFlow() != nil {
			numFlows++
		}
	}
	return numFlows, s.seen
}

// ServerStatus implements observer.Observer.
func (s *Server) ServerStatus(context.Context, *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	num, seen := s.counts()
	up := time.Since(s.started)
	return &observerpb.ServerStatusResponse{
		NumFlows: num, MaxFlows: uint64(s.opts.MaxFlows), SeenFlows: seen, UptimeNs: uint64(up.Nanoseconds()),
		NumConnectedNodes: wrapperspb.UInt32(1), NumUnavailableNodes: wrapperspb.UInt32(0),
		Version: s.opts.Version, FlowsRate: float64(seen) / up.Seconds(),
	}, nil
}

// GetNodes implements observer.Observer: the one node this server stands for.
func (s *Server) GetNodes(context.Context, *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	num, seen := s.counts()
	return &observerpb.GetNodesResponse{Nodes: []*observerpb.Node{{
		Name: s.opts.NodeName, Version: s.opts.Version, Address: s.opts.Address, State: relaypb.NodeState_NODE_CONNECTED,
		UptimeNs: uint64(time.Since(s.started).Nanoseconds()), NumFlows: num, MaxFlows: uint64(s.opts.MaxFlows), SeenFlows: seen,
	}}}, nil
}

// GetNamespaces implements observer.Observer from the namespaces of buffered flows.
func (s *Server) GetNamespaces(context.Context, *observerpb.GetNamespacesRequest) (*observerpb.GetNamespacesResponse, error) {
	s.mu.Lock()
	seen := map[[2]string]bool{}
	for _, e := range s.ring {
		f := e.ev.GetFlow()
		for _, ep := range []*flowpb.Endpoint{f.GetSource(), f.GetDestination()} {
			if ep.GetNamespace() != "" {
				seen[[2]string{ep.GetClusterName(), ep.GetNamespace()}] = true
			}
		}
	}
	s.mu.Unlock()
	resp := &observerpb.GetNamespacesResponse{}
	for k := range seen {
		resp.Namespaces = append(resp.Namespaces, &observerpb.Namespace{Cluster: k[0], Namespace: k[1]})
	}
	sort.Slice(resp.Namespaces, func(i, j int) bool { return resp.Namespaces[i].Namespace < resp.Namespaces[j].Namespace })
	return resp, nil
}

// limitFlows keeps the first or last n flows of evs; notices between them stay, they do not count.
func limitFlows(evs []*observerpb.GetFlowsResponse, n uint64, first bool) []*observerpb.GetFlowsResponse {
	var seen uint64
	if first {
		for i, ev := range evs {
			if ev.GetFlow() != nil {
				if seen == n {
					return evs[:i]
				}
				seen++
			}
		}
		return evs
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].GetFlow() != nil {
			if seen == n {
				return evs[i+1:]
			}
			seen++
		}
	}
	return evs
}
