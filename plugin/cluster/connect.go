package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// Conn is an established gRPC connection to one node's daemon.
type Conn struct {
	Pod  DaemonPod
	GRPC *grpc.ClientConn
}

// Source is the daemon as a top.Source named by its node.
func (c Conn) Source() top.Source {
	return top.Source{Name: c.Pod.Node, Client: isoobsv1.NewDaemonClient(c.GRPC)}
}

// Conns are the connections of one fan-out.
type Conns []Conn

// Sources returns one top.Source per connection.
func (cs Conns) Sources() []top.Source {
	out := make([]top.Source, len(cs))
	for i, c := range cs {
		out[i] = c.Source()
	}
	return out
}

// Close closes every connection.
func (cs Conns) Close() {
	for _, c := range cs {
		_ = c.GRPC.Close()
	}
}

// forwardErrorer is a net.Conn that can say why its far end went away
// (the kubelet's port-forward error message; see k8s.PortForwardDialer).
type forwardErrorer interface {
	ForwardError(wait time.Duration) string
}

// Connect sets up a gRPC connection to every pod's daemon, at most
// opts.Concurrency at a time, each given opts.ConnectTimeout to complete the
// HTTP/2 handshake through dial. Pods that fail or time out come back as
// missing nodes with the reason; a node's failure never delays the others
// beyond its timeout. If every pod fails for lack of permission, that
// *PermissionError is returned.
func Connect(ctx context.Context, pods []DaemonPod, dial DialFunc, opts Options) (Conns, []top.MissingNode, error) {
	opts = opts.withDefaults()
	dialOpts, err := opts.DialOptions()
	if err != nil {
		return nil, nil, err
	}
	type result struct {
		conn    Conn
		missing *top.MissingNode
		err     error
	}
	results := make([]result, len(pods))
	sem := make(chan struct{}, opts.Concurrency)
	var wg sync.WaitGroup
	for i, pod := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i].missing = &top.MissingNode{Node: pod.Node, Reason: ctx.Err().Error()}
				return
			}
			defer func() { <-sem }()
			cc, err := connectOne(ctx, pod, dial, opts.ConnectTimeout, dialOpts...)
			if err != nil {
				results[i].err = err
				results[i].missing = &top.MissingNode{Node: pod.Node, Reason: err.Error()}
				return
			}
			results[i].conn = Conn{Pod: pod, GRPC: cc}
		}()
	}
	wg.Wait()

	var conns Conns
	var missing []top.MissingNode
	var permErr *PermissionError
	for _, r := range results {
		if r.missing != nil {
			missing = append(missing, *r.missing)
			if pe := (*PermissionError)(nil); errors.As(r.err, &pe) && permErr == nil {
				permErr = pe
			}
			continue
		}
		conns = append(conns, r.conn)
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i].Node < missing[j].Node })
	if len(conns) == 0 && permErr != nil {
		return nil, missing, permErr
	}
	return conns, missing, nil
}

// connectOne dials pod and waits until its gRPC connection is ready. The
// first failure ends the wait: gRPC would retry with backoff, but a fan-out
// over hundreds of nodes must not wait for a broken one.
func connectOne(ctx context.Context, pod DaemonPod, dial DialFunc, timeout time.Duration, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	var mu sync.Mutex
	var dialErr error
	var lastConn net.Conn
	cc, err := grpc.NewClient("passthrough:///"+pod.Node, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			c, err := dial(ctx, pod)
			mu.Lock()
			dialErr, lastConn = err, c
			mu.Unlock()
			return c, err
		}),
		// Frames are small and there may be hundreds of connections: small
		// buffers keep the plugin's memory flat in the node count.
		// A node whose port-forward dies silently is found by pings, not by waiting forever
		// (the daemon allows one every 10 s).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithReadBufferSize(16 << 10),
		grpc.WithWriteBufferSize(16 << 10),
	}, extra...)...)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cc.Connect()
	for state := cc.GetState(); state != connectivity.Ready; state = cc.GetState() {
		if state == connectivity.TransientFailure || state == connectivity.Shutdown {
			break
		}
		if !cc.WaitForStateChange(cctx, state) {
			break
		}
	}
	if cc.GetState() == connectivity.Ready {
		return cc, nil
	}
	_ = cc.Close()
	mu.Lock()
	defer mu.Unlock()
	switch {
	case dialErr != nil:
		return nil, dialErr
	case lastConn != nil:
		if fe, ok := lastConn.(forwardErrorer); ok {
			if msg := fe.ForwardError(500 * time.Millisecond); msg != "" {
				return nil, fmt.Errorf("port-forward to %s port %d: %s (is isoobs-daemon listening on 127.0.0.1:%d in its pod? see its logs)", pod, pod.Port, msg, pod.Port)
			}
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if cctx.Err() != nil {
		return nil, fmt.Errorf("no answer from daemon pod %s within %s (connect timeout)", pod, timeout)
	}
	return nil, fmt.Errorf("daemon pod %s port %d: the connection closed during the gRPC handshake", pod, pod.Port)
}
