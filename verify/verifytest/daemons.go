package verifytest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/isoobs/isoobs/daemon"
	"github.com/isoobs/isoobs/hubble"
	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
)

// isoobsDaemons are real isoobs daemons, in process, whose /metrics the isoobs pods serve:
// one following a Hubble stand-in (the real observer API, testlab/hubblereplay), one pointed
// at a Hubble socket nobody serves. Each loads the real probe on a lab node's cgroup root, so
// isoobs_probes_attached and isoobs_hubble_connected are what a daemon really exports.
type isoobsDaemons struct {
	connected, disconnected *daemon.Daemon
}

func startIsoobsDaemons(t testing.TB, lab *testlab.Lab) *isoobsDaemons {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "hubble.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hubblereplay.NewServer(hubblereplay.Options{NodeName: lab.NodeNames()[0]}).Register(gs)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)

	ctx, cancel := context.WithCancel(context.Background())
	start := func(node, hubbleServer string) *daemon.Daemon {
		d, err := daemon.New(daemon.Config{NodeName: node, CgroupRoot: lab.Node(node).CgroupRoot(), Interval: 250 * time.Millisecond,
			Hubble: hubble.ClientConfig{Server: hubbleServer}})
		if err != nil {
			t.Fatalf("isoobs daemon for %s: %v", node, err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = d.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; _ = d.Close() })
		return d
	}
	nodes := lab.NodeNames()
	ds := &isoobsDaemons{
		connected:    start(nodes[0], "unix://"+sock),
		disconnected: start(nodes[1%len(nodes)], "unix://"+filepath.Join(dir, "nobody-serves-this.sock")),
	}
	// Connected before any check reads it: the healthy stack must pass at once.
	deadline := time.Now().Add(30 * time.Second)
	for ds.connected.Ready() != nil || !ds.hubbleConnected() {
		if time.Now().After(deadline) {
			t.Fatalf("the isoobs daemon did not get ready and follow the Hubble stand-in within 30 s (ready: %v)", ds.connected.Ready())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ds
}

// hubbleConnected reads the connected daemon's own isoobs_hubble_connected.
func (ds *isoobsDaemons) hubbleConnected() bool {
	sums, err := scrape(ds.connected.HTTPHandler(), "isoobs_hubble_connected")
	return err == nil && sums["isoobs_hubble_connected"] == 1
}

// handler serves the connected daemon's endpoints, or the disconnected one's.
func (ds *isoobsDaemons) handler(disconnected func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := ds.connected
		if disconnected() {
			d = ds.disconnected
		}
		d.HTTPHandler().ServeHTTP(w, r)
	})
}

// scrape GETs /metrics from h and returns the values of the named unlabelled samples.
func scrape(h http.Handler, names ...string) (map[string]float64, error) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d", rec.Code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", line, err)
		}
		out[name] = v
	}
	return out, nil
}
