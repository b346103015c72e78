//go:build linux

package plugin

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/isoobs/isoobs/cgroupv2"
	"github.com/isoobs/isoobs/plugin/top"
	"github.com/isoobs/isoobs/testlab/needroot"
)

// Ground truth of the end-to-end test: what the client in the pod cgroup asks.
const (
	e2eOKName      = "api.example.com"
	e2eMissingName = "missing.example.com"
	e2eOKQueries   = 20
	e2eNXQueries   = 10
)

// TestLocalCountsRealDNSExactly runs `top dns --local` with the real daemon
// engine: the eBPF probe on a cgroup root of its own, a client process in a
// pod-shaped cgroup below it sending known DNS queries over real sockets to a
// UDP DNS responder in this process, and checks the printed JSON row against
// what the client sent.
func TestLocalCountsRealDNSExactly(t *testing.T) {
	needroot.Require(t, "--local loads eBPF programs")
	v2, err := cgroupv2.Detect()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(v2, fmt.Sprintf("isoobs-plugin-e2e-%d", os.Getpid()))
	const uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
	leaf := filepath.Join(root, "kubepods", "besteffort", "pod"+uid, "ctr")
	if err := os.MkdirAll(leaf, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// cgroup directories go with rmdir, deepest first, once empty.
		for d := leaf; strings.HasPrefix(d, root); d = filepath.Dir(d) {
			if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("removing cgroup %s: %v", d, err)
			}
		}
	})

	server := startDNSResponder(t)

	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	flags := genericclioptions.NewConfigFlags(false)
	noKubeconfig := filepath.Join(t.TempDir(), "none")
	flags.KubeConfig = &noKubeconfig
	o := NewTopDNSOptions(flags, streams)
	o.Local, o.CgroupRoot, o.NodeName, o.Once, o.Output, o.Interval, o.TopNames = true, root, "e2e-node", true, "json", 200*time.Millisecond, 2
	if err := o.Complete(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Start the engine first so the probe is attached before the client runs.
	sources, closeSources, err := o.startLocal(ctx)
	if err != nil {
		t.Fatalf("starting the local engine: %v", err)
	}
	defer closeSources()
	o.openSources = func(context.Context) ([]top.Source, func(), error) { return sources, func() {}, nil }

	runClientInCgroup(t, leaf, server)

	// --once prints the first frame: counts since the engine started.
	if err := o.Run(ctx); err != nil {
		t.Fatalf("top dns --local --once: %v\nstderr: %s", err, errOut)
	}
	var f top.Frame
	if err := json.Unmarshal(out.Bytes(), &f); err != nil {
		t.Fatalf("output is not one JSON frame: %v\n%s", err, out)
	}
	var row *top.Row
	for i := range f.Rows {
		if f.Rows[i].PodUID == uid {
			row = &f.Rows[i]
		}
	}
	if row == nil {
		t.Fatalf("no row for pod %s in %s", uid, out)
	}
	if row.Queries != e2eOKQueries+e2eNXQueries || row.Responses != e2eOKQueries+e2eNXQueries ||
		row.NoError != e2eOKQueries || row.NXDomain != e2eNXQueries || row.ServFail != 0 || row.Malformed != 0 || row.Node != "e2e-node" {
		t.Errorf("row counts differ from what the client sent (%d NOERROR, %d NXDOMAIN): %+v", e2eOKQueries, e2eNXQueries, *row)
	}
	if row.LatencyP50Ms <= 0 || row.LatencyP99Ms < row.LatencyP50Ms {
		t.Errorf("latency p50 %v p99 %v", row.LatencyP50Ms, row.LatencyP99Ms)
	}
	want := []top.NameCount{{Name: e2eOKName, Queries: e2eOKQueries}, {Name: e2eMissingName, Queries: e2eNXQueries, NXDomain: e2eNXQueries}}
	if len(row.TopNames) != 2 {
		t.Fatalf("top names = %+v", row.TopNames)
	}
	for i, w := range want {
		got := row.TopNames[i]
		got.Name = strings.TrimSuffix(got.Name, ".")
		if got != w {
			t.Errorf("top name %d = %+v, want %+v", i, got, w)
		}
	}
	if !strings.Contains(errOut.String(), "no usable kubeconfig") {
		t.Errorf("stderr should say names are off: %q", errOut)
	}
}

// startDNSResponder answers every query on port 53 (the probe's port) of a
// loopback address of its own: NXDOMAIN for e2eMissingName, NOERROR
// otherwise (no answer records needed).
func startDNSResponder(t *testing.T) string {
	t.Helper()
	var pc net.PacketConn
	var err error
	for i := range 50 {
		// 127.0.0.0/8 is all loopback; skip addresses a local resolver may hold.
		addr := fmt.Sprintf("127.%d.%d.1:53", 100+(os.Getpid()+i)%100, 1+i)
		if pc, err = net.ListenPacket("udp", addr); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no free loopback address for a DNS responder on port 53: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			resp := append([]byte(nil), buf[:n]...)
			resp[2] |= 0x80 // QR: response
			if strings.Contains(string(resp[12:]), "missing") {
				resp[3] = resp[3]&0xF0 | 3 // RCODE NXDOMAIN
			}
			_, _ = pc.WriteTo(resp, addr)
		}
	}()
	return pc.LocalAddr().String()
}

// runClientInCgroup runs this test binary as the DNS client, born inside the
// cgroup so every socket it opens is counted for the pod.
func runClientInCgroup(t *testing.T, cgroup, server string) {
	t.Helper()
	dir, err := os.Open(cgroup)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDNSClient$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ISOOBS_E2E_DNS_SERVER="+server)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("DNS client: %v\n%s", err, b)
	}
}

// TestHelperDNSClient is the client process of TestLocalCountsRealDNSExactly.
func TestHelperDNSClient(t *testing.T) {
	server := os.Getenv("ISOOBS_E2E_DNS_SERVER")
	if server == "" {
		t.Skip("helper process of TestLocalCountsRealDNSExactly")
	}
	conn, err := net.Dial("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ask := func(id uint16, name string, wantRcode byte) {
		if _, err := conn.Write(dnsQuery(id, name)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, err := conn.Read(buf)
		if err != nil || n < 12 || binary.BigEndian.Uint16(buf) != id || buf[3]&0x0F != wantRcode {
			t.Fatalf("query %d %s: n=%d err=%v", id, name, n, err)
		}
	}
	for i := range e2eOKQueries {
		ask(uint16(i+1), e2eOKName, 0)
	}
	for i := range e2eNXQueries {
		ask(uint16(1000+i), e2eMissingName, 3)
	}
}

// dnsQuery builds a recursive A/IN query for name.
func dnsQuery(id uint16, name string) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = append(b, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0) // RD; QDCOUNT 1
	for _, label := range strings.Split(name, ".") {
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	b = append(b, 0, 0, 1, 0, 1) // root, QTYPE A, QCLASS IN
	return b
}
