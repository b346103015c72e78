package hubble

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
	observerpb "github.com/isoobs/isoobs/proto/observer/observer"
)

// DefaultServer is the node-local Hubble socket of a Cilium agent.
const DefaultServer = "unix:///var/run/cilium/hubble.sock"

// TLSConfig are the hubble CLI's TLS options (--tls, --tls-ca-cert-files,
// --tls-client-cert-file, --tls-client-key-file, --tls-server-name).
type TLSConfig struct {
	Enabled bool
	// CAFiles verify the server; empty uses the system roots.
	CAFiles []string
	// CertFile and KeyFile are the client certificate for mTLS (Hubble Relay, port 4244).
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server certificate
	// (e.g. *.default.hubble-grpc.cilium.io for a node's Hubble server).
	ServerName string
	// InsecureSkipVerify accepts any server certificate.
	InsecureSkipVerify bool
}

// ClientConfig configures a Client. Zero values mean the defaults.
type ClientConfig struct {
	// Server is unix:///path, host:port or tcp://host:port. Default DefaultServer.
	Server string
	TLS    TLSConfig
	// BackoffMin and BackoffMax bound the reconnect delay, doubled after each failure.
	// Defaults 500ms and 30s.
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger
}

// Client follows Hubble's flows into an Aggregator, reconnecting with backoff.
type Client struct {
	cfg   ClientConfig
	agg   *Aggregator
	creds credentials.TransportCredentials

	mu             sync.Mutex
	connected      bool
	connectedSince time.Time
	lastErr        string
	lastErrAt      time.Time
	received       uint64 // GetFlowsResponse messages with a flow
	reconnects     uint64
	attempts       uint64
	rate           rateMeter
}

// Status is the state of a Client.
type Status struct {
	Server         string
	Connected      bool
	ConnectedSince time.Time
	// LastError is the last reason the connection failed or ended ("" if none yet).
	LastError   string
	LastErrorAt time.Time
	// FlowsReceived counts flows received; FlowsPerSecond is their rate over the last ~10 s.
	FlowsReceived  uint64
	FlowsPerSecond float64
	// Attempts counts connection attempts, Reconnects those after a failure.
	Attempts, Reconnects uint64
}

// NewClient checks the configuration (TLS files are read now, so a wrong path is reported at
// start) and returns a client feeding agg. Run starts it.
func NewClient(cfg ClientConfig, agg *Aggregator) (*Client, error) {
	if cfg.Server == "" {
		cfg.Server = DefaultServer
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 500 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(30*time.Second, cfg.BackoffMin)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	creds, err := transportCredentials(cfg.TLS)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(cfg.Server, "unix://") && cfg.TLS.Enabled {
		return nil, fmt.Errorf("--hubble-server %s: TLS over a unix socket is not used by Hubble; drop the --hubble-tls options", cfg.Server)
	}
	return &Client{cfg: cfg, agg: agg, creds: creds}, nil
}

func transportCredentials(t TLSConfig) (credentials.TransportCredentials, error) {
	if !t.Enabled {
		if len(t.CAFiles) > 0 || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify {
			return nil, errors.New("hubble TLS options given without --hubble-tls: add --hubble-tls to use them")
		}
		return insecure.NewCredentials(), nil
	}
	tc := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in, like hubble --tls-allow-insecure
	if len(t.CAFiles) > 0 {
		pool := x509.NewCertPool()
		for _, f := range t.CAFiles {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("--hubble-tls-ca-cert %s: %w", f, err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--hubble-tls-ca-cert %s: no PEM certificate in it", f)
			}
		}
		tc.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("--hubble-tls-client-cert and --hubble-tls-client-key go together: pass both or neither")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("hubble client certificate %s / key %s: %w", t.CertFile, t.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(tc), nil
}

// FlowFilters are the whitelist the client sends: L7 DNS, every drop, L7 HTTP (Hubble ORs them).
func FlowFilters() []*flowpb.FlowFilter {
	l7 := []*flowpb.EventTypeFilter{{Type: 129}} // monitor API MessageTypeAccessLog: L7 flows
	return []*flowpb.FlowFilter{
		{Protocol: []string{"dns"}, EventType: l7},
		{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}},
		{Protocol: []string{"http"}, EventType: l7},
	}
}

// FieldMask lists the flow fields the aggregator reads; Hubble leaves out the rest.
func FieldMask() *fieldmaskpb.FieldMask {
	return &fieldmaskpb.FieldMask{Paths: []string{
		"time", "verdict", "drop_reason_desc", "Type", "node_name", "traffic_direction", "is_reply",
		"source.namespace", "source.pod_name", "source.identity", "source.labels", "source.workloads",
		"destination.namespace", "destination.pod_name", "destination.identity", "destination.labels", "destination.workloads",
		"l4.UDP.destination_port", "l4.TCP.destination_port",
		"l7.type", "l7.latency_ns", "l7.dns.query", "l7.dns.rcode", "l7.dns.qtypes", "l7.http.code", "l7.http.method",
		"l7.http.url", "destination_service",
	}}
}

// Run follows flows until ctx ends, reconnecting after failures with exponential backoff.
func (c *Client) Run(ctx context.Context) {
	backoff := c.cfg.BackoffMin
	meter := time.NewTicker(time.Second)
	defer meter.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-meter.C:
				c.mu.Lock()
				c.rate.sample(now, c.received)
				c.mu.Unlock()
			}
		}
	}()
	lastLogged := ""
	for ctx.Err() == nil {
		c.mu.Lock()
		c.attempts++
		if c.attempts > 1 {
			c.reconnects++
		}
		c.mu.Unlock()
		started := time.Now()
		err := c.follow(ctx)
		if ctx.Err() != nil {
			break
		}
		c.setDown(err)
		if time.Since(started) > c.cfg.BackoffMax {
			lastLogged = "" // it had been working: a new failure is news
		}
		// Say it once; the same failure again every few seconds is noise (Status keeps it).
		if msg := err.Error(); msg != lastLogged {
			c.cfg.Logger.Warn("hubble flows unavailable; retrying", "server", c.cfg.Server, "err", err, "retry_in", backoff)
			lastLogged = msg
		} else {
			c.cfg.Logger.Debug("hubble flows still unavailable", "server", c.cfg.Server, "err", err, "retry_in", backoff)
		}
		// A stream that ran for a while was a success: start the backoff over.
		if time.Since(started) > c.cfg.BackoffMax {
			backoff = c.cfg.BackoffMin
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, c.cfg.BackoffMax)
	}
	c.mu.Lock()
	c.connected = false
	c.mu.Unlock()
}

func (c *Client) setDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connected = false
	c.lastErr = err.Error()
	c.lastErrAt = time.Now()
}

// target turns the server flag into a gRPC target.
func target(server string) string {
	if s, ok := strings.CutPrefix(server, "tcp://"); ok {
		return "passthrough:///" + s
	}
	if strings.HasPrefix(server, "unix://") {
		return server
	}
	return "passthrough:///" + server
}

// follow runs one connection: it returns why the stream ended.
func (c *Client) follow(ctx context.Context) error {
	if path, ok := strings.CutPrefix(c.cfg.Server, "unix://"); ok {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("hubble socket %s: %w (is Cilium running with Hubble enabled on this node? pass --hubble-server for another address)", path, err)
		}
	}
	conn, err := grpc.NewClient(target(c.cfg.Server), grpc.WithTransportCredentials(c.creds))
	if err != nil {
		return fmt.Errorf("hubble server %s: %w", c.cfg.Server, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, &observerpb.GetFlowsRequest{
		Follow:    true,
		Whitelist: FlowFilters(),
		FieldMask: FieldMask(),
	})
	if err != nil {
		return fmt.Errorf("hubble GetFlows on %s: %w", c.cfg.Server, err)
	}
	// GetFlows (not wait-for-ready) returns only once a transport to the server is up; a
	// server refusing the request fails the first Recv and marks the client down again.
	c.mu.Lock()
	c.connected = true
	c.connectedSince = time.Now()
	c.mu.Unlock()
	c.cfg.Logger.Info("following hubble flows", "server", c.cfg.Server)
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("hubble server %s ended the flow stream", c.cfg.Server)
			}
			return fmt.Errorf("hubble flow stream from %s: %w", c.cfg.Server, err)
		}
		switch r := resp.GetResponseTypes().(type) {
		case *observerpb.GetFlowsResponse_Flow:
			c.agg.Observe(r.Flow)
			c.mu.Lock()
			c.received++
			c.mu.Unlock()
		case *observerpb.GetFlowsResponse_LostEvents:
			c.agg.ObserveLost(r.LostEvents)
		}
	}
}

// Status returns the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{
		Server: c.cfg.Server, Connected: c.connected, ConnectedSince: c.connectedSince,
		LastError: c.lastErr, LastErrorAt: c.lastErrAt,
		FlowsReceived: c.received, FlowsPerSecond: c.rate.perSecond(),
		Attempts: c.attempts, Reconnects: c.reconnects,
	}
}

// Server is the configured address.
func (c *Client) Server() string { return c.cfg.Server }

// rateMeter keeps one cumulative sample per second over the last 10 s.
type rateMeter struct {
	times  [11]time.Time
	counts [11]uint64
	n, i   int
}

func (m *rateMeter) sample(t time.Time, count uint64) {
	m.times[m.i], m.counts[m.i] = t, count
	m.i = (m.i + 1) % len(m.times)
	if m.n < len(m.times) {
		m.n++
	}
}

func (m *rateMeter) perSecond() float64 {
	if m.n < 2 {
		return 0
	}
	newest := (m.i - 1 + len(m.times)) % len(m.times)
	oldest := (m.i - m.n + len(m.times)) % len(m.times)
	dt := m.times[newest].Sub(m.times[oldest]).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(m.counts[newest]-m.counts[oldest]) / dt
}
