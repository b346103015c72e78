// Package fakedaemon serves constructed TopFrames over real gRPC (bufconn or
// a unix socket) so the plugin's client side can be tested without probes.
package fakedaemon

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// FrameFunc builds the n-th frame (0-based) of a stream opened at start;
// returning nil ends the stream.
type FrameFunc func(req *isoobsv1.TopRequest, n int, start, now time.Time) *isoobsv1.TopFrame

// Server is a DaemonServer whose Top sends one FrameFunc frame per request
// interval.
type Server struct {
	isoobsv1.UnimplementedDaemonServer
	Node  string
	Frame FrameFunc
	// Immediate sends frame 0 as soon as the stream opens, as a daemon may.
	Immediate bool
	// Ticks, when set, paces the stream instead of the request interval:
	// each receive releases one frame (or the end), so tests run in lockstep.
	Ticks chan struct{}
	// EndErr is returned to the client when Frame returns nil (nil: EOF).
	EndErr error
	// Version is what Status reports ("fake" when empty).
	Version string
	// TracePod ("namespace/name") is the pod Trace finds here; it sends TraceEvents and then
	// waits for the client to go. Other pods are NotFound.
	TracePod    string
	TraceEvents []*isoobsv1.DNSEvent

	mu             sync.Mutex
	requests       []*isoobsv1.TopRequest
	authorizations []string
	statusCalls    int
}

// Authorizations returns the "authorization" metadata of the Top calls received so far
// ("" for a call without).
func (s *Server) Authorizations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.authorizations...)
}

// StatusCalls counts the Status RPCs received so far.
func (s *Server) StatusCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statusCalls
}

// Requests returns copies of the TopRequests received so far.
func (s *Server) Requests() []*isoobsv1.TopRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*isoobsv1.TopRequest, len(s.requests))
	for i, r := range s.requests {
		out[i] = proto.Clone(r).(*isoobsv1.TopRequest)
	}
	return out
}

// Top implements isoobsv1.DaemonServer.
func (s *Server) Top(req *isoobsv1.TopRequest, stream grpc.ServerStreamingServer[isoobsv1.TopFrame]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	s.mu.Lock()
	s.requests = append(s.requests, proto.Clone(req).(*isoobsv1.TopRequest))
	s.authorizations = append(s.authorizations, strings.Join(md.Get("authorization"), ","))
	s.mu.Unlock()
	interval := req.GetInterval().AsDuration()
	if interval <= 0 {
		interval = time.Second
	}
	start := time.Now()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for n := 0; ; n++ {
		if s.Ticks != nil {
			select {
			case <-s.Ticks:
			case <-stream.Context().Done():
				return nil
			}
		} else if n > 0 || !s.Immediate {
			select {
			case <-ticker.C:
			case <-stream.Context().Done():
				return nil
			}
		}
		f := s.Frame(req, n, start, time.Now())
		if f == nil {
			return s.EndErr
		}
		if f.Node == "" {
			f.Node = s.Node
		}
		if err := stream.Send(f); err != nil {
			return err
		}
	}
}

// Trace implements isoobsv1.DaemonServer.
func (s *Server) Trace(req *isoobsv1.TraceRequest, stream grpc.ServerStreamingServer[isoobsv1.DNSEvent]) error {
	if req.GetNamespace()+"/"+req.GetPod() != s.TracePod {
		return status.Errorf(codes.NotFound, "pod %s/%s is not on node %s", req.GetNamespace(), req.GetPod(), s.Node)
	}
	for _, ev := range s.TraceEvents {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	<-stream.Context().Done()
	return nil
}

// Status implements isoobsv1.DaemonServer.
func (s *Server) Status(context.Context, *isoobsv1.StatusRequest) (*isoobsv1.StatusResponse, error) {
	s.mu.Lock()
	s.statusCalls++
	s.mu.Unlock()
	v := s.Version
	if v == "" {
		v = "fake"
	}
	return &isoobsv1.StatusResponse{Node: s.Node, Version: v}, nil
}

// StartBufconn serves srv on an in-memory listener until the test ends and
// returns a client for it.
func StartBufconn(t testing.TB, srv isoobsv1.DaemonServer) isoobsv1.DaemonClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	isoobsv1.RegisterDaemonServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		gs.Stop()
	})
	return isoobsv1.NewDaemonClient(conn)
}

// StartUnix serves srv on a unix socket in a temporary directory until the
// test ends and returns its --daemon address (unix:///...).
func StartUnix(t testing.TB, srv isoobsv1.DaemonServer) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "isoobs.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	isoobsv1.RegisterDaemonServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return "unix://" + path
}

// Stamp sets a frame's since/time from the stream start (SinceStreamStart)
// or from a fixed daemon start an hour earlier.
func Stamp(f *isoobsv1.TopFrame, req *isoobsv1.TopRequest, start, now time.Time) *isoobsv1.TopFrame {
	since := start.Add(-time.Hour)
	if req.GetSinceStreamStart() {
		since = start
	}
	f.Since = timestamppb.New(since)
	f.Time = timestamppb.New(now)
	f.Interval = req.GetInterval()
	return f
}
