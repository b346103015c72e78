package cluster_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"

	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// The fan-out benchmark measures the plugin side of `top dns` against N
// simulated nodes: time from the start of the fan-out to the first merged
// frame, and the plugin's memory. The N daemons and the stand-in for the API
// server run in a child process (TestFanOutFarm) so that only the plugin's
// own memory is counted here. The plugin dials through its production
// port-forward code (cluster.NewPortForwardDialer → k8s.PortForwardDialer:
// client-go's SPDY round tripper over TLS); the stand-in answers the
// pods/portforward upgrade with apimachinery's SPDY server side, as the
// kubelet's streaming server does, and pipes each data stream to its node's
// daemon. What it leaves out is the API server's own work (authn/authz, the
// second hop to the kubelet).

const farmEnv = "ISOOBS_FANOUT_FARM_NODES"

// farmPodsPerNode rows per node frame, each with 3 top names: a busy node.
const farmPodsPerNode = 20

func farmFrames(node string) fakedaemon.FrameFunc {
	return func(req *isoobsv1.TopRequest, n int, start, now time.Time) *isoobsv1.TopFrame {
		f := &isoobsv1.TopFrame{Node: node}
		for p := range farmPodsPerNode {
			pod := fmt.Sprintf("%s-pod-%d", node, p)
			f.Rows = append(f.Rows, &isoobsv1.DNSRow{Node: node, Namespace: "ns-" + strconv.Itoa(p%5), Pod: pod, PodUid: "uid-" + pod,
				Workload: "wl-" + strconv.Itoa(p), WorkloadKind: "Deployment", Queries: 100, Responses: 100, Noerror: 90, Nxdomain: 10,
				LatencyLog2Us: []uint64{0, 0, 0, 0, 0, 0, 10, 80, 10},
				TopNames:      []*isoobsv1.NameCount{{Name: "a." + pod + ".svc", Queries: 50}, {Name: "b.example.com", Queries: 30}, {Name: "c.example.com", Queries: 20}}})
		}
		f.TopNames = []*isoobsv1.NameCount{{Name: "b.example.com", Queries: 600}}
		return fakedaemon.Stamp(f, req, start, now)
	}
}

// TestFanOutFarm is the child process of BenchmarkFanOut, not a test: it
// serves N fake daemons behind a TLS front and prints the front's address.
func TestFanOutFarm(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(farmEnv))
	if err != nil {
		t.Skip("only run as BenchmarkFanOut's child process")
	}
	socks := map[string]string{}
	for i := range n {
		node := fmt.Sprintf("node-%04d", i)
		socks[node] = strings.TrimPrefix(fakedaemon.StartUnix(t, &fakedaemon.Server{Node: node, Frame: farmFrames(node), Immediate: true}), "unix://")
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/namespaces/{namespace}/pods/{pod}/portforward", func(w http.ResponseWriter, r *http.Request) {
		sock, ok := socks[farmNode(r.PathValue("pod"))]
		if !ok {
			http.Error(w, "pod not found", http.StatusNotFound)
			return
		}
		servePortForward(w, r, sock)
	})
	go func() { _ = http.Serve(ln, mux) }()
	fmt.Println("FARM", ln.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark closes our stdin
}

func selfSigned(t testing.TB) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// farmNode is the node of a farm pod: isoobs-0042 runs on node-0042.
func farmNode(pod string) string { return "node-" + strings.TrimPrefix(pod, "isoobs-") }

// servePortForward answers a pods/portforward request as the kubelet's streaming server does:
// the SPDY upgrade, then for each data stream a connection to the daemon's socket, piped both
// ways. The error stream stays open and empty (the daemon was reached).
func servePortForward(w http.ResponseWriter, r *http.Request, sock string) {
	if _, err := httpstream.Handshake(r, w, []string{portforward.PortForwardProtocolV1Name}); err != nil {
		return
	}
	streams := make(chan httpstream.Stream, 2)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, _ <-chan struct{}) error {
		streams <- s
		return nil
	})
	if conn == nil {
		return
	}
	defer conn.Close()
	for {
		select {
		case s := <-streams:
			if s.Headers().Get(corev1.StreamType) != corev1.StreamTypeData {
				continue
			}
			go func() {
				defer s.Close()
				d, err := net.Dial("unix", sock)
				if err != nil {
					return
				}
				defer d.Close()
				go func() { _, _ = io.Copy(d, s); d.Close() }()
				_, _ = io.Copy(s, d)
			}()
		case <-conn.CloseChan():
			return
		}
	}
}

// farmDialer reaches the farm's pods with the plugin's own port-forward dialer.
func farmDialer(b *testing.B, front string) cluster.DialFunc {
	d, err := cluster.NewPortForwardDialer(&rest.Config{Host: "https://" + front, TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	if err != nil {
		b.Fatal(err)
	}
	return d.Dial
}

func startFarm(b *testing.B, n int) string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestFanOutFarm$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", farmEnv, n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "FARM "); ok {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return addr
		}
	}
	b.Fatalf("the farm did not start: %v", sc.Err())
	return ""
}

// BenchmarkFanOut: one op = connect to every node, open the Top streams,
// merge and receive the first cluster-wide frame, close. Reported:
// first-frame-ms (wall time of the op), heap-MiB (live heap with the
// connections open and the frame merged) and sys-MiB (memory obtained from
// the OS by the whole benchmark process, i.e. the plugin's footprint).
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{50, 200, 500} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			front := startFarm(b, n)
			dial := farmDialer(b, front)
			pods := make([]cluster.DaemonPod, n)
			for i := range pods {
				pods[i] = cluster.DaemonPod{Node: fmt.Sprintf("node-%04d", i), Namespace: "isoobs-system", Name: fmt.Sprintf("isoobs-%04d", i), Port: 9967}
			}
			req := &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DNS, GroupBy: isoobsv1.GroupBy_GROUP_BY_POD, Interval: durationpb.New(time.Second), TopNames: 3}
			var total time.Duration
			var heapPeak uint64
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				conns, missing, err := cluster.Connect(context.Background(), pods, dial, cluster.Options{})
				if err != nil || len(missing) != 0 {
					b.Fatalf("connect: %v, missing %v", err, missing)
				}
				var frame top.Frame
				err = top.Stream(context.Background(), conns.Sources(), top.StreamOptions{Request: req, Merge: top.MergeOptions{GroupBy: top.GroupByPod, TopNames: 3}},
					func(f top.Frame) error { frame = f; return top.ErrStop })
				total += time.Since(start)
				if err != nil || len(frame.Nodes) != n || len(frame.Rows) != n*farmPodsPerNode {
					b.Fatalf("frame: err %v, %d nodes, %d rows", err, len(frame.Nodes), len(frame.Rows))
				}
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				heapPeak = max(heapPeak, ms.HeapAlloc)
				conns.Close()
			}
			b.StopTimer()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "first-frame-ms")
			b.ReportMetric(float64(heapPeak)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(ms.Sys)/(1<<20), "sys-MiB")
		})
	}
}
