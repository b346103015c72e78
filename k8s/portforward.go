// Package k8s holds the Kubernetes connection code the plugin and verify share: streams to a
// pod's port through the API server, and the pod rules both apply.
package k8s

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// PodPort is a port of a pod.
type PodPort struct {
	Namespace, Name string
	Port            int
}

func (p PodPort) String() string { return p.Namespace + "/" + p.Name }

// PortForwardDialer reaches pods' ports through the API server's
// pods/portforward subresource, like `kubectl port-forward` but without a
// local listener: each dial is one SPDY connection to the API server
// carrying one forwarded stream, handed to gRPC as a net.Conn.
type PortForwardDialer struct {
	config *rest.Config
	client rest.Interface
}

// NewPortForwardDialer returns a dialer using the user's client config.
func NewPortForwardDialer(config *rest.Config) (*PortForwardDialer, error) {
	cs, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	return &PortForwardDialer{config: config, client: cs.CoreV1().RESTClient()}, nil
}

// Dial opens a stream to pod's port. A refusal by RBAC comes back as the API server's
// error (apierrors.IsForbidden, or "forbidden" in its text for the upgrade).
func (d *PortForwardDialer) Dial(ctx context.Context, pod PodPort) (net.Conn, error) {
	url := d.client.Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	// A round tripper holds the one connection it upgrades, so each dial needs its own.
	transport, upgrader, err := spdy.RoundTripperFor(d.config)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url.String(), nil)
	if err != nil {
		return nil, err
	}
	// The upgrade's request and response ignore ctx once connected; a
	// goroutine keeps a hanging API server from holding this node past ctx.
	type negotiated struct {
		conn httpstream.Connection
		err  error
	}
	done := make(chan negotiated, 1)
	go func() {
		conn, _, err := spdy.Negotiate(upgrader, &http.Client{Transport: transport}, req, portforward.PortForwardProtocolV1Name)
		done <- negotiated{conn, err}
	}()
	var conn httpstream.Connection
	select {
	case n := <-done:
		conn, err = n.conn, n.err
	case <-ctx.Done():
		go func() {
			if n := <-done; n.conn != nil {
				n.conn.Close()
			}
		}()
		return nil, fmt.Errorf("port-forward to %s: %w", pod, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("port-forward to %s: %w", pod, err)
	}
	return newForwardedConn(conn, pod)
}

// forwardedConn is one port-forward stream pair (data + error) as a net.Conn.
type forwardedConn struct {
	conn   httpstream.Connection
	data   httpstream.Stream
	pod    PodPort
	errMsg chan string // the error stream's content, once it closes

	closeOnce sync.Once
}

func newForwardedConn(conn httpstream.Connection, pod PodPort) (net.Conn, error) {
	headers := http.Header{}
	headers.Set(corev1.StreamType, corev1.StreamTypeError)
	headers.Set(corev1.PortHeader, strconv.Itoa(pod.Port))
	headers.Set(corev1.PortForwardRequestIDHeader, "0")
	errorStream, err := conn.CreateStream(headers)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to %s: error stream: %w", pod, err)
	}
	// Nothing is written to the error stream; the kubelet writes there why
	// it could not reach the port (e.g. connection refused).
	errorStream.Close()
	errMsg := make(chan string, 1)
	go func() {
		msg, _ := io.ReadAll(errorStream)
		errMsg <- strings.TrimSpace(string(msg))
	}()
	headers.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(headers)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to %s: data stream: %w", pod, err)
	}
	return &forwardedConn{conn: conn, data: data, pod: pod, errMsg: errMsg}, nil
}

// ForwardError is the kubelet's message on the forward's error stream (why it could not reach
// the port, e.g. connection refused), waiting at most wait for it; "" if none.
func (c *forwardedConn) ForwardError(wait time.Duration) string {
	select {
	case msg := <-c.errMsg:
		c.errMsg <- msg
		return msg
	case <-time.After(wait):
		return ""
	}
}

// Read returns the kubelet's error message instead of a bare EOF when the
// forward failed, so gRPC and the user see why.
func (c *forwardedConn) Read(p []byte) (int, error) {
	n, err := c.data.Read(p)
	if err == io.EOF {
		select {
		case msg := <-c.errMsg:
			if msg != "" {
				c.errMsg <- msg
				return n, fmt.Errorf("port-forward to %s port %d: %s", c.pod, c.pod.Port, msg)
			}
			c.errMsg <- msg
		case <-time.After(200 * time.Millisecond):
		}
	}
	return n, err
}

func (c *forwardedConn) Write(p []byte) (int, error) { return c.data.Write(p) }

func (c *forwardedConn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.data.Reset()
		_ = c.conn.Close()
	})
	return nil
}

func (c *forwardedConn) LocalAddr() net.Addr { return forwardAddr("kubectl-isoobs") }
func (c *forwardedConn) RemoteAddr() net.Addr {
	return forwardAddr(c.pod.String() + ":" + strconv.Itoa(c.pod.Port))
}

// Deadlines are not supported by SPDY streams; gRPC uses its own keepalives and contexts.
func (c *forwardedConn) SetDeadline(time.Time) error      { return nil }
func (c *forwardedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *forwardedConn) SetWriteDeadline(time.Time) error { return nil }

type forwardAddr string

func (a forwardAddr) Network() string { return "portforward" }
func (a forwardAddr) String() string  { return string(a) }
