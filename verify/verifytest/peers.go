// Package verifytest serves, at the addresses the isoobs lab gives the
// stack's pods, the wire formats of the components that cannot run there:
// Prometheus metric text (recorded in verify/testdata), Hubble Relay's
// observer gRPC API (generated from Cilium's .proto files) and Prometheus'
// /api/v1/targets. `kubectl isoobs verify` then runs its production code
// path (API server pod proxy, port-forward or pod IP) against them.
package verifytest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	observerpb "github.com/isoobs/isoobs/proto/observer/observer"
	relaypb "github.com/isoobs/isoobs/proto/observer/relay"
	"github.com/isoobs/isoobs/testlab/podnet"
)

// listenInPod opens a TCP listener on the pod's IPv4 address inside its
// network namespace.
func listenInPod(pod *podnet.Pod, port int) (net.Listener, error) {
	if !pod.IPv4.IsValid() {
		return nil, errors.New("pod " + pod.String() + " has no IPv4 address")
	}
	var ln net.Listener
	err := pod.InNetns(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(pod.IPv4, uint16(port)).String())
		return err
	})
	return ln, err
}

// ServeHTTP serves h on the pod's IP:port until stop.
func ServeHTTP(pod *podnet.Pod, port int, h http.Handler) (stop func(), err error) {
	ln, err := listenInPod(pod, port)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

// MetricsHandler serves the body returned by text at /metrics, with the
// content type of the format (OpenMetrics when openMetrics).
func MetricsHandler(text func() []byte, openMetrics bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		if openMetrics {
			w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
		} else {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		}
		_, _ = w.Write(text())
	})
	return mux
}

// Relay is a Hubble Relay stand-in: the observer.Observer ServerStatus and
// GetNodes answers a relay gives, and the gRPC health service `hubble
// status` checks. Set its nodes with SetNodes.
type Relay struct {
	observerpb.UnimplementedObserverServer
	mu          sync.Mutex
	connected   []string
	unavailable []string
	// NumFlows/MaxFlows/SeenFlows/Uptime/FlowsRate are what ServerStatus reports.
	NumFlows, MaxFlows, SeenFlows uint64
	Uptime                        time.Duration
	FlowsRate                     float64
}

// NewRelay returns a relay with seed 003's `hubble status` numbers
// (12,285/12,285 flows) for the given connected nodes.
func NewRelay(connected ...string) *Relay {
	return &Relay{connected: connected, NumFlows: 12285, MaxFlows: 12285, SeenFlows: 113580, Uptime: time.Hour, FlowsRate: 31.55}
}

// SetNodes sets which nodes the relay reports connected and unavailable.
func (r *Relay) SetNodes(connected, unavailable []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connected, r.unavailable = append([]string(nil), connected...), append([]string(nil), unavailable...)
}

// ServerStatus answers as Hubble Relay does: flow counts summed over the
// connected nodes, and the unavailable nodes by name.
func (r *Relay) ServerStatus(context.Context, *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &observerpb.ServerStatusResponse{
		NumFlows:            r.NumFlows,
		MaxFlows:            r.MaxFlows,
		SeenFlows:           r.SeenFlows,
		UptimeNs:            uint64(r.Uptime.Nanoseconds()),
		NumConnectedNodes:   wrapperspb.UInt32(uint32(len(r.connected))),
		NumUnavailableNodes: wrapperspb.UInt32(uint32(len(r.unavailable))),
		UnavailableNodes:    append([]string(nil), r.unavailable...),
		Version:             "1.20.2",
		FlowsRate:           r.FlowsRate,
	}, nil
}

// GetNodes lists every node with its state.
func (r *Relay) GetNodes(context.Context, *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var nodes []*observerpb.Node
	for _, n := range r.connected {
		nodes = append(nodes, &observerpb.Node{Name: n, Version: "1.20.2", State: relaypb.NodeState_NODE_CONNECTED, Address: n + ":4244"})
	}
	for _, n := range r.unavailable {
		nodes = append(nodes, &observerpb.Node{Name: n, State: relaypb.NodeState_NODE_UNAVAILABLE, Address: n + ":4244"})
	}
	return &observerpb.GetNodesResponse{Nodes: nodes}, nil
}

// ServeRelay serves the relay (and a SERVING health status for
// observer.Observer) on the pod's IP:port, with TLS when creds is set.
func ServeRelay(pod *podnet.Pod, port int, r *Relay, creds credentials.TransportCredentials) (stop func(), err error) {
	ln, err := listenInPod(pod, port)
	if err != nil {
		return nil, err
	}
	var opts []grpc.ServerOption
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	srv := grpc.NewServer(opts...)
	observerpb.RegisterObserverServer(srv, r)
	hs := health.NewServer()
	hs.SetServingStatus("observer.Observer", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	return srv.Stop, nil
}

// addr is a helper for logs.
func addr(pod *podnet.Pod, port int) string {
	return net.JoinHostPort(pod.IPv4.String(), strconv.Itoa(port))
}
