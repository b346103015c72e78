package plugin

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

const skewAdvice = ": run `kubectl isoobs install` to upgrade the daemons to v0.2.0, or `kubectl krew upgrade isoobs` if the plugin is the older one"

func TestVersionSkewWarning(t *testing.T) {
	many := []NodeVersion{}
	for _, n := range []string{"n7", "n2", "n3", "n1", "n5", "n6", "n4"} {
		many = append(many, NodeVersion{n, "v0.1.0"})
	}
	for _, tt := range []struct {
		name    string
		plugin  string
		daemons []NodeVersion
		want    string
	}{
		{"all equal", "v0.2.0", []NodeVersion{{"a", "v0.2.0"}, {"b", "v0.2.0"}}, ""},
		{"none", "v0.2.0", nil, ""},
		{"older and newer daemons, grouped by version", "v0.2.0",
			[]NodeVersion{{"c", "v0.1.1"}, {"b", "v0.2.0"}, {"d", "v0.1.0"}, {"a", "v0.1.0"}, {"e", "v0.3.0"}},
			"version skew: kubectl-isoobs is v0.2.0 but the isoobs daemon is v0.1.0 on a, d; v0.1.1 on c; v0.3.0 on e" + skewAdvice},
		{"daemons without a comparable version", "v0.2.0",
			[]NodeVersion{{"a", "(devel)"}, {"b", ""}, {"c", "dev"}}, ""},
		{"a development plugin compares nothing", "(devel)", []NodeVersion{{"a", "v0.1.0"}}, ""},
		{"many nodes are counted, not listed", "v0.2.0", many,
			"version skew: kubectl-isoobs is v0.2.0 but the isoobs daemon is v0.1.0 on n1, n2, n3, n4, n5 and 2 more" + skewAdvice},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := versionSkewWarning(tt.plugin, tt.daemons); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestStatusVersionSkew(t *testing.T) {
	report := StatusReport{Daemons: []DaemonStatus{
		{Node: "node-a", Version: "v0.1.0"},
		{Node: "node-b", Version: "v0.2.0"},
		{Node: "node-c", Error: "port-forward: connection refused"}, // asked nothing: no version
	}}
	if got := statusVersionSkew(report); got != "" {
		t.Errorf("a development build warned: %q", got)
	}
	stampBuildinfo(t, "v0.2.0", "", "")
	if got, want := statusVersionSkew(report), "version skew: kubectl-isoobs is v0.2.0 but the isoobs daemon is v0.1.0 on node-a"+skewAdvice; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	report.Daemons[0].Version = "v0.2.0"
	if got := statusVersionSkew(report); got != "" {
		t.Errorf("equal versions warned: %q", got)
	}
	out, _, err := runCmd(t, "status", "--help")
	if err != nil || !strings.Contains(out, `Development builds (version "(devel)")`) {
		t.Errorf("status --help lacks the version check: %v\n%s", err, out)
	}
}

// topWithDaemons runs `top dns --once -o json` against fake daemons reporting these versions.
func topWithDaemons(t *testing.T, versions map[string]string) (top.Frame, string, map[string]*fakedaemon.Server) {
	t.Helper()
	servers := map[string]*fakedaemon.Server{}
	var addrs []string
	for node, v := range versions {
		srv := &fakedaemon.Server{Node: node, Version: v, Frame: crawlerFrame}
		servers[node] = srv
		addrs = append(addrs, fakedaemon.StartUnix(t, srv))
	}
	out, errOut, err := runCmd(t, "top", "dns", "--daemon", strings.Join(addrs, ","), "--once", "-o", "json", "--interval", "100ms")
	if err != nil {
		t.Fatalf("top dns: %v\nstderr: %s", err, errOut)
	}
	var f top.Frame
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return f, errOut, servers
}

func TestTopDNSWarnsOnVersionSkew(t *testing.T) {
	// A development build (as in go test) asks no daemon for its version.
	_, errOut, servers := topWithDaemons(t, map[string]string{"node-a": "v0.1.0"})
	if n := servers["node-a"].StatusCalls(); n != 0 || strings.Contains(errOut, "version skew") {
		t.Errorf("development build: %d Status calls, stderr %q", n, errOut)
	}

	stampBuildinfo(t, "v0.2.0", "0123456789abcdef0123456789abcdef01234567", "2026-12-03T12:00:00Z")
	f, errOut, servers := topWithDaemons(t, map[string]string{"node-a": "v0.1.0", "node-b": "v0.2.0"})
	want := "version skew: kubectl-isoobs is v0.2.0 but the isoobs daemon is v0.1.0 on node-a" + skewAdvice
	if errOut != "warning: "+want+"\n" {
		t.Errorf("stderr = %q\nwant the warning once", errOut)
	}
	if len(f.Warnings) != 1 || f.Warnings[0] != want {
		t.Errorf("frame warnings = %q", f.Warnings)
	}
	for node, srv := range servers {
		if n := srv.StatusCalls(); n != 1 {
			t.Errorf("%s: %d Status calls, want 1 (at connect time)", node, n)
		}
	}

	f, errOut, _ = topWithDaemons(t, map[string]string{"node-a": "v0.2.0", "node-b": "v0.2.0"})
	if errOut != "" || len(f.Warnings) != 0 {
		t.Errorf("equal versions: stderr %q, warnings %q", errOut, f.Warnings)
	}
}

func TestTopDNSLocalSkipsVersionCheck(t *testing.T) {
	stampBuildinfo(t, "v0.2.0", "", "")
	srv := &fakedaemon.Server{Version: "v0.1.0", Frame: crawlerFrame}
	streams, _, _, errOut := genericiooptions.NewTestIOStreams()
	flags := genericclioptions.NewConfigFlags(false)
	missing := t.TempDir() + "/no-kubeconfig"
	flags.KubeConfig = &missing
	o := NewTopDNSOptions(flags, streams)
	o.localEngine = func(_ context.Context, cfg LocalConfig) (isoobsv1.DaemonServer, func(), error) {
		srv.Node = cfg.NodeName
		return srv, func() {}, nil
	}
	o.Local, o.NodeName, o.Once, o.Output, o.Interval = true, "lab-node", true, "json", 100*time.Millisecond
	if err := o.Complete(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := srv.StatusCalls(); n != 0 || strings.Contains(errOut.String(), "version skew") {
		t.Errorf("--local: %d Status calls, stderr %q", n, errOut)
	}
}

// The release ships the plugin for macOS and Windows: --local must say at once that it needs Linux.
func TestTopDNSLocalNeedsLinux(t *testing.T) {
	saved := hostOS
	hostOS = "darwin"
	t.Cleanup(func() { hostOS = saved })
	_, _, err := runCmd(t, "top", "dns", "--local", "--once")
	want := "--local runs the eBPF probes in this process and needs a Linux host (this is darwin): drop --local to read every node's daemon through the API server, or read one with --daemon ADDR"
	if err == nil || err.Error() != want {
		t.Errorf("top dns --local on darwin: %v\nwant %s", err, want)
	}
}
