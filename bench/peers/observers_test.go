package peers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/isoobs/isoobs/bench/emptyprobe"
	"github.com/isoobs/isoobs/deploy"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// observer is one arm of the benchmark, started once per (round, server) and kept for every load
// of that session.
type observer interface {
	name() string
	start(w *world) error
	// counts are the queries counted per client pod name since start (nil: the observer counts
	// nothing), and the observer's own cumulative lost counter.
	counts() (map[string]uint64, uint64, error)
	// frames are the per-second rankings seen so far (the pod ranked first in each).
	frames() []frame
	// tree is the observer's processes on the node (nil: none).
	tree() *procTree
	stop() error
}

// frame is one refresh of an observer's ranking, as a person watching it would see it.
type frame struct {
	at  time.Time
	top string // client pod ranked first ("" when the leader is no client pod)
}

func newObserver(name string) observer {
	switch name {
	case "none":
		return &noneObs{}
	case "empty":
		return &emptyObs{}
	case "isoobs":
		return &isoobsObs{}
	case "ig":
		return &streamObs{kind: "ig"}
	case "tcpdump":
		return &streamObs{kind: "tcpdump"}
	}
	panic("unknown observer " + name)
}

// allObservers in their base order; rounds rotate it.
var allObservers = []string{"none", "empty", "isoobs", "ig", "tcpdump"}

// ---- none, empty ----

type noneObs struct{}

func (noneObs) name() string                               { return "none" }
func (noneObs) start(*world) error                         { return nil }
func (noneObs) counts() (map[string]uint64, uint64, error) { return nil, 0, nil }
func (noneObs) frames() []frame                            { return nil }
func (noneObs) tree() *procTree                            { return nil }
func (noneObs) stop() error                                { return nil }

type emptyObs struct {
	noneObs
	progs *emptyprobe.Programs
}

func (*emptyObs) name() string { return "empty" }
func (e *emptyObs) start(w *world) (err error) {
	e.progs, err = emptyprobe.Attach(w.lab.Node(peersNode).CgroupRoot())
	return err
}
func (e *emptyObs) stop() error { return e.progs.Close() }

// ---- isoobs ----

// isoobsObs is the isoobs-daemon as the chart runs it (deploy/chart: --interval=1s
// --retention=15m --log-level=info --latency-sample-above=2000, a unix socket and a loopback gRPC
// listener, metrics, GOMEMLIMIT from the chart's goMemLimit; --hubble-server=off as install sets it without Cilium),
// plus the real plugin (`top dns --daemon ADDR -A -o json`) as the person watching it. The
// plugin would run on the engineer's machine, so its CPU is not the node's (logged apart).
type isoobsObs struct {
	daemon, plugin *exec.Cmd
	daemonDone     chan struct{}
	conn           *grpc.ClientConn
	client         isoobsv1.DaemonClient
	w              *world
	sockDir        string
	stopPlugin     context.CancelFunc
	pluginDone     chan struct{}
	mu             sync.Mutex
	fr             []frame
}

func (*isoobsObs) name() string { return "isoobs" }

func (o *isoobsObs) start(w *world) error {
	o.w = w
	var err error
	if o.sockDir, err = os.MkdirTemp("", "isoobs-peers-run-"); err != nil {
		return err
	}
	addr, err := freePort()
	if err != nil {
		return err
	}
	metrics, err := freePort()
	if err != nil {
		return err
	}
	o.daemon = exec.Command(w.daemonBin,
		"--node-name="+peersNode,
		"--cgroup-root="+w.lab.Node(peersNode).CgroupRoot(),
		"--kubeconfig="+w.lab.Kubeconfig(),
		"--grpc-listen=unix://"+filepath.Join(o.sockDir, "isoobs.sock"),
		"--grpc-listen="+addr,
		"--metrics-listen="+metrics,
		"--interval=1s",
		"--retention=15m",
		"--log-level=info",
		"--hubble-server=off",
		"--latency-sample-above=2000")
	limit, err := chartGoMemLimit()
	if err != nil {
		return err
	}
	o.daemon.Env = append(os.Environ(), "GOMEMLIMIT="+limit)
	o.daemon.Stdout, o.daemon.Stderr = io.Discard, io.Discard
	if os.Getenv("ISOOBS_PEERS_DEBUG") != "" {
		o.daemon.Stderr = os.Stderr
	}
	o.daemon.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := o.daemon.Start(); err != nil {
		return err
	}
	o.daemonDone = make(chan struct{})
	go func() { o.daemon.Wait(); close(o.daemonDone) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("isoobs-daemon never listened on %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if o.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return err
	}
	o.client = isoobsv1.NewDaemonClient(o.conn)

	ctx, cancel := context.WithCancel(context.Background())
	o.stopPlugin = cancel
	o.plugin = exec.CommandContext(ctx, w.pluginBin, "top", "dns", "--daemon", addr, "-A", "-o", "json", "--top-names", "3", "--limit", "5")
	out, err := o.plugin.StdoutPipe()
	if err != nil {
		return err
	}
	o.plugin.Stderr = io.Discard
	if err := o.plugin.Start(); err != nil {
		return err
	}
	o.pluginDone = make(chan struct{})
	go func() {
		defer close(o.pluginDone)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var f struct {
				Rows []struct {
					Pod string `json:"pod"`
				} `json:"rows"`
			}
			if json.Unmarshal(sc.Bytes(), &f) != nil {
				continue
			}
			fr := frame{at: time.Now()}
			if len(f.Rows) > 0 {
				fr.top = f.Rows[0].Pod
			}
			o.mu.Lock()
			o.fr = append(o.fr, fr)
			o.mu.Unlock()
		}
		o.plugin.Wait()
	}()
	return nil
}

func (o *isoobsObs) counts() (map[string]uint64, uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := o.client.Top(ctx, &isoobsv1.TopRequest{Namespace: "tenant-jobs"})
	if err != nil {
		return nil, 0, err
	}
	f, err := s.Recv()
	if err != nil {
		return nil, 0, err
	}
	out := map[string]uint64{}
	for _, r := range f.Rows {
		out[r.Pod] += r.Queries
	}
	st, err := o.client.Status(ctx, &isoobsv1.StatusRequest{})
	if err != nil {
		return nil, 0, err
	}
	// What the per-pod query counts can miss: the kernel's pod map full, queries of pods the
	// daemon could not track, failed map reads. (Names lost to a full name table change no count.)
	lost := st.Counters["probe_pod_map_full"] + st.Counters["untracked_pod_queries"] + st.Counters["read_errors"]
	return out, lost, nil
}

func (o *isoobsObs) frames() []frame {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]frame(nil), o.fr...)
}

func (o *isoobsObs) tree() *procTree { return &procTree{roots: []int{o.daemon.Process.Pid}} }

// pluginTree is the viewer's processes (CPU logged, not the node's).
func (o *isoobsObs) pluginTree() *procTree { return &procTree{roots: []int{o.plugin.Process.Pid}} }

func (o *isoobsObs) stop() error {
	if o.stopPlugin != nil {
		o.stopPlugin()
		<-o.pluginDone
	}
	if o.conn != nil {
		o.conn.Close()
	}
	if o.daemon != nil && o.daemon.Process != nil {
		o.daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-o.daemonDone:
		case <-time.After(10 * time.Second):
			o.daemon.Process.Kill()
			<-o.daemonDone
		}
	}
	return os.RemoveAll(o.sockDir)
}

// chartGoMemLimit is the chart's goMemLimit (deploy/chart/values.yaml), the daemon's GOMEMLIMIT.
func chartGoMemLimit() (string, error) {
	vals, err := deploy.DefaultValues()
	if err != nil {
		return "", err
	}
	if v, _ := vals["goMemLimit"].(string); v != "" {
		return v, nil
	}
	return "", errors.New("deploy/chart/values.yaml has no goMemLimit")
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ---- ig and tcpdump: an event stream piped into an awk counter ----

// counterAwk is the per-source counter a person scripts in an incident: it counts each DNS
// query by source address and, every second (on the first event of a new second), prints the
// last second's counts ("F <sec> <src> <n>") and an end-of-frame line ("E <sec>"). The sum of
// all F lines is everything it counted. mode=ig reads ig's JSON events, keeping queries (qr Q)
// as they arrive at the host from a pod (pkt_type HOST: each query also leaves toward the
// server as OUTGOING); mode=tcpdump reads tcpdump's one-line output.
const counterAwk = `
{
	if (mode == "ig") {
		if (index($0, "\"qr\":\"Q\"") == 0 || index($0, "\"pkt_type\":\"HOST\"") == 0) next
		i = index($0, "\"src\":{"); if (i == 0) next
		s = substr($0, i + 7); j = index(s, "\"addr\":\""); if (j == 0) next
		s = substr(s, j + 8); src = substr(s, 1, index(s, "\"") - 1)
	} else {
		src = ""
		for (f = 1; f < NF; f++) if ($f == "IP") { src = $(f + 1); sub(/\.[0-9]+$/, "", src); break }
		if (src == "") next
	}
	now = systime()
	if (now != last) {
		if (last) { for (a in c) print "F", last, a, c[a]; print "E", last; fflush() }
		for (a in c) delete c[a]
		last = now
	}
	c[src]++
}
END { for (a in c) print "F", last, a, c[a]; print "E", last; fflush() }
`

// streamObs runs a peer (ig trace_dns or tcpdump) piped into counterAwk.
type streamObs struct {
	kind     string // "ig" or "tcpdump"
	w        *world
	src, awk *exec.Cmd
	srcDone  chan struct{}
	awkDone  chan struct{}
	mu       sync.Mutex
	totals   map[string]uint64 // by source IP
	fr       []frame
	lost     uint64 // ig: "lost N samples" lines; tcpdump: "dropped by kernel" at the last SIGUSR1
	stderr   strings.Builder
	stderrMu sync.Mutex
}

func (o *streamObs) name() string { return o.kind }

var (
	igLostRe      = regexp.MustCompile(`lost (\d+) (?:samples|events)`)
	tcpdumpDropRe = regexp.MustCompile(`(\d+) packets? dropped by kernel`)
)

func (o *streamObs) start(w *world) error {
	o.w = w
	o.totals = map[string]uint64{}
	switch o.kind {
	case "ig":
		dir, kit, err := w.ig()
		if err != nil {
			return err
		}
		// The kit's igw: ig in new mount+PID namespaces (host netns), its OCI store in $IGW.
		o.src = exec.Command(filepath.Join(kit, "igw"), "run", "trace_dns:local", "--host", "-o", "json",
			"--verify-image=false", "--disallow-pulling")
		o.src.Env = append(os.Environ(), "IGW="+dir, "IG="+filepath.Join(dir, "ig"))
	case "tcpdump":
		// -Q in: each query once, as it enters the host from the client pod's veth (it leaves
		// again toward the server); the lab's /16 stands for "this node's pods".
		o.src = exec.Command("tcpdump", "-i", "any", "-Q", "in", "-nn", "-l",
			fmt.Sprintf("udp and dst port 53 and net %s", w.labNet))
	}
	o.src.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	o.awk = exec.Command("awk", "-W", "interactive", "-v", "mode="+o.kind, counterAwk)
	o.awk.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	o.src.Stdout, o.awk.Stdin = pw, pr
	srcErr, err := o.src.StderrPipe()
	if err != nil {
		return err
	}
	awkOut, err := o.awk.StdoutPipe()
	if err != nil {
		return err
	}
	if err := o.awk.Start(); err != nil {
		return err
	}
	if err := o.src.Start(); err != nil {
		o.awk.Process.Kill()
		o.awk.Wait()
		return err
	}
	pw.Close()
	pr.Close()
	o.srcDone, o.awkDone = make(chan struct{}), make(chan struct{})
	listening := make(chan struct{})
	var listenOnce sync.Once
	go func() {
		sc := bufio.NewScanner(srcErr)
		for sc.Scan() {
			line := sc.Text()
			if o.kind == "tcpdump" && strings.HasPrefix(line, "listening on ") {
				listenOnce.Do(func() { close(listening) })
			}
			o.stderrMu.Lock()
			if o.stderr.Len() < 1<<20 {
				o.stderr.WriteString(line + "\n")
			}
			o.stderrMu.Unlock()
			if m := igLostRe.FindStringSubmatch(line); m != nil && o.kind == "ig" {
				n, _ := strconv.ParseUint(m[1], 10, 64)
				o.mu.Lock()
				o.lost += n
				o.mu.Unlock()
			}
			if m := tcpdumpDropRe.FindStringSubmatch(line); m != nil && o.kind == "tcpdump" {
				n, _ := strconv.ParseUint(m[1], 10, 64)
				o.mu.Lock()
				o.lost = n // cumulative since start
				o.mu.Unlock()
			}
		}
		o.src.Wait()
		close(o.srcDone)
	}()
	go func() {
		defer close(o.awkDone)
		sc := bufio.NewScanner(awkOut)
		cur := map[string]uint64{}
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 4 && f[0] == "F":
				n, _ := strconv.ParseUint(f[3], 10, 64)
				cur[f[2]] = n
			case len(f) == 2 && f[0] == "E":
				fr := frame{at: time.Now()}
				var best uint64
				var bestIP string
				for ip, n := range cur {
					if n > best || (n == best && ip < bestIP) {
						best, bestIP = n, ip
					}
				}
				fr.top = o.w.podByIP[bestIP]
				o.mu.Lock()
				for ip, n := range cur {
					o.totals[ip] += n
				}
				o.fr = append(o.fr, fr)
				o.mu.Unlock()
				cur = map[string]uint64{}
			}
		}
		o.awk.Wait()
	}()
	if o.kind == "tcpdump" {
		// Its SIGUSR1 handler (statistics) is installed once it listens; before, SIGUSR1 kills it.
		select {
		case <-listening:
		case <-o.srcDone:
			return fmt.Errorf("tcpdump exited: %s", o.tail())
		case <-time.After(30 * time.Second):
			return fmt.Errorf("tcpdump did not listen in 30 s: %s", o.tail())
		}
	}
	return nil
}

func (o *streamObs) counts() (map[string]uint64, uint64, error) {
	if o.kind == "tcpdump" {
		// tcpdump prints its statistics (with "dropped by kernel") on SIGUSR1.
		o.src.Process.Signal(syscall.SIGUSR1)
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case <-o.srcDone:
		return nil, 0, fmt.Errorf("%s exited: %s", o.kind, o.tail())
	default:
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]uint64{}
	for ip, n := range o.totals {
		if pod, ok := o.w.podByIP[ip]; ok {
			out[pod] += n
		}
	}
	return out, o.lost, nil
}

func (o *streamObs) tail() string {
	o.stderrMu.Lock()
	defer o.stderrMu.Unlock()
	s := o.stderr.String()
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

func (o *streamObs) frames() []frame {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]frame(nil), o.fr...)
}

func (o *streamObs) tree() *procTree {
	return &procTree{roots: []int{o.src.Process.Pid, o.awk.Process.Pid}}
}

func (o *streamObs) stop() error {
	if o.src == nil || o.src.Process == nil {
		return nil
	}
	// ig runs below unshare (which does not pass signals on): interrupt ig itself, as the kit does.
	target := []int{o.src.Process.Pid}
	if o.kind == "ig" {
		target = nil
		for _, pid := range o.tree().pids() {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "ig" {
				target = append(target, pid)
			}
		}
	}
	for _, pid := range target {
		syscall.Kill(pid, syscall.SIGINT)
	}
	var err error
	select {
	case <-o.srcDone:
	case <-time.After(15 * time.Second):
		for _, pid := range append(target, o.src.Process.Pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		<-o.srcDone
		err = errors.New(o.kind + " did not stop on SIGINT")
	}
	select {
	case <-o.awkDone:
	case <-time.After(5 * time.Second):
		o.awk.Process.Kill()
		<-o.awkDone
	}
	return err
}

// sortedKeys for stable logs.
func sortedKeys(m map[string]uint64) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
