package verify

import (
	"context"
	"errors"
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

// dialPodPort opens one TCP connection to a pod's port through the API
// server's pods/portforward (what `kubectl port-forward` does), without a
// local listener: the returned conn is the forwarded data stream. An error
// the kubelet reports on the error stream ends the conn and is returned by
// its Read.
func dialPodPort(ctx context.Context, cfg *rest.Config, client kubernetes.Interface, ns, pod string, port int) (net.Conn, error) {
	if cfg == nil {
		return nil, errors.New("no REST config for a port-forward")
	}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	u := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	type dialed struct {
		conn httpstream.Connection
		err  error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
		ch <- dialed{c, err}
	}()
	var streamConn httpstream.Connection
	select {
	case d := <-ch:
		if d.err != nil {
			return nil, fmt.Errorf("port-forward to %s/%s: %w", ns, pod, d.err)
		}
		streamConn = d.conn
	case <-ctx.Done():
		go func() {
			if d := <-ch; d.conn != nil {
				_ = d.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
	headers := http.Header{}
	headers.Set(corev1.StreamType, corev1.StreamTypeError)
	headers.Set(corev1.PortHeader, strconv.Itoa(port))
	headers.Set(corev1.PortForwardRequestIDHeader, "0")
	errorStream, err := streamConn.CreateStream(headers)
	if err != nil {
		_ = streamConn.Close()
		return nil, fmt.Errorf("port-forward to %s/%s: error stream: %w", ns, pod, err)
	}
	_ = errorStream.Close() // we only read it
	headers.Set(corev1.StreamType, corev1.StreamTypeData)
	dataStream, err := streamConn.CreateStream(headers)
	if err != nil {
		_ = streamConn.Close()
		return nil, fmt.Errorf("port-forward to %s/%s: data stream: %w", ns, pod, err)
	}
	c := &streamNetConn{conn: streamConn, data: dataStream, target: fmt.Sprintf("%s/%s:%d", ns, pod, port), errRead: make(chan struct{})}
	go func() {
		defer close(c.errRead)
		msg, _ := io.ReadAll(errorStream)
		if s := strings.TrimSpace(string(msg)); s != "" {
			c.fail(fmt.Errorf("port-forward to %s: %s", c.target, s))
		}
	}()
	return c, nil
}

// streamNetConn makes a port-forward data stream a net.Conn for gRPC.
type streamNetConn struct {
	conn   httpstream.Connection
	data   httpstream.Stream
	target string
	// errRead closes once the error stream is read: the kubelet's reason
	// may arrive just after the data stream ends.
	errRead chan struct{}

	mu     sync.Mutex
	err    error
	closed bool
}

func (c *streamNetConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	_ = c.Close()
}

func (c *streamNetConn) Read(p []byte) (int, error) {
	n, err := c.data.Read(p)
	if err != nil {
		select {
		case <-c.errRead:
		case <-time.After(200 * time.Millisecond):
		}
		c.mu.Lock()
		if c.err != nil {
			err = c.err
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *streamNetConn) Write(p []byte) (int, error) { return c.data.Write(p) }

func (c *streamNetConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	_ = c.data.Reset()
	return c.conn.Close()
}

type pfAddr string

func (a pfAddr) Network() string { return "portforward" }
func (a pfAddr) String() string  { return string(a) }

func (c *streamNetConn) LocalAddr() net.Addr              { return pfAddr("local") }
func (c *streamNetConn) RemoteAddr() net.Addr             { return pfAddr(c.target) }
func (c *streamNetConn) SetDeadline(time.Time) error      { return nil }
func (c *streamNetConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamNetConn) SetWriteDeadline(time.Time) error { return nil }
