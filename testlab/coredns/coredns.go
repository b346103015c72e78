// Package coredns runs the real CoreDNS (v1.15.0, built by testlab/scripts/build-bins.sh) as the
// process of a lab pod (kube-system/coredns), serving:
//   - the cluster zone, reverse zones: the kubernetes plugin against the lab API server;
//   - servfail.test.: SERVFAIL for every name; refused.test.: REFUSED for every name;
//   - noerror.test.: NOERROR with an A (198.51.100.53) / AAAA (2001:db8::53) answer for any name;
//   - slow.test. (only with Options.SlowBy): NOERROR with an A answer, each after SlowBy
//     (CoreDNS's erratic plugin), for a replica that answers slowly;
//   - everything else: NXDOMAIN (the lab has no internet, so nothing is forwarded).
//
// Tests get a known rcode mix from those zones and compare their own counts with CoreDNS's
// metrics (Server.Metrics), which are the ground truth of what the server saw.
package coredns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/isoobs/isoobs/testlab/controlplane"
	"github.com/isoobs/isoobs/testlab/podnet"
	"golang.org/x/net/dns/dnsmessage"
	"k8s.io/client-go/tools/clientcmd"
)

// Version is the CoreDNS release the lab runs; it must match testlab/scripts/build-bins.sh.
const Version = "v1.15.0"

// Zones with fixed answers, for producing a known rcode mix.
const (
	ServfailZone = "servfail.test."
	RefusedZone  = "refused.test."
	NoErrorZone  = "noerror.test."
	SlowZone     = "slow.test."
)

// Answers given for any name in NoErrorZone (documentation ranges; nothing ever connects to them).
var (
	NoErrorA    = netip.MustParseAddr("198.51.100.53")
	NoErrorAAAA = netip.MustParseAddr("2001:db8::53")
)

// Ports inside the pod.
const (
	DNSPort     = 53
	MetricsPort = 9153
	ReadyPort   = 8181
)

type Options struct {
	// Kubeconfig of the lab API server for the kubernetes plugin. Empty: no cluster zone (its
	// names get NXDOMAIN like any other). An API server on 127.0.0.1 is reached through a
	// forwarder inside the pod on the same address, so the kubeconfig works unchanged.
	Kubeconfig string
	// ClusterDomain defaults to cluster.local.
	ClusterDomain string
	// ClusterIPs are extra addresses to serve on (the kube-dns Service ClusterIPs); each is
	// added to the pod with Pod.AddLocalAddress.
	ClusterIPs []netip.Addr
	// LogQueries enables the log plugin (one line per query in Dir/coredns.log). Costly under load.
	LogQueries bool
	// Binary overrides the CoreDNS executable; default: the build-bins.sh cache (built if missing).
	Binary string
	// Dir receives the Corefile and coredns.log. Empty: a temp dir removed by Stop.
	Dir string
	// ReadyTimeout bounds the wait for the ready plugin (default 60s; the kubernetes plugin
	// reports ready only after its first sync with the API server).
	ReadyTimeout time.Duration
	// SlowBy, when set, serves SlowZone, every answer delayed by it (a replica made slow).
	SlowBy time.Duration
}

// Server is a running CoreDNS.
type Server struct {
	Pod        *podnet.Pod
	Addrs      []netip.Addr // addresses it answers on, port DNSPort
	MetricsURL string       // http://<pod IP>:9153/metrics, reachable from the root netns
	Dir        string
	LogPath    string
	Corefile   string

	cmd       *exec.Cmd
	done      chan struct{}
	waitErr   error
	stopFwd   func()
	removeDir bool
	stopOnce  sync.Once
}

// BinaryPath is where build-bins.sh caches CoreDNS.
func BinaryPath() string {
	return filepath.Join(controlplane.CacheDir(), "bin", "coredns-"+Version, "coredns")
}

var ensureMu sync.Mutex

// EnsureBinary returns the cached CoreDNS binary, building it with build-bins.sh if missing (~1 min, once).
func EnsureBinary() (string, error) {
	ensureMu.Lock()
	defer ensureMu.Unlock()
	bin := BinaryPath()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "testlab", "scripts", "build-bins.sh")
	out, err := exec.Command("bash", script, "coredns").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building CoreDNS with %s coredns failed: %v\n%s", script, err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s coredns ran but %s is missing; run it by hand to see why", script, bin)
	}
	return bin, nil
}

var corefileTmpl = template.Must(template.New("Corefile").Parse(`(common) {
    bind{{range .Binds}} {{.}}{{end}}
    errors
    prometheus {{.Metrics}}
{{- if .Log}}
    log
{{- end}}
}
{{- if .Kubeconfig}}
{{.ClusterDomain}}:53 in-addr.arpa:53 ip6.arpa:53 {
    import common
    ready {{.Ready}}
    kubernetes {{.ClusterDomain}} in-addr.arpa ip6.arpa {
        kubeconfig {{.Kubeconfig}}
        pods insecure
        ttl 5
    }
}
{{- end}}
{{- if .SlowBy}}
{{.Slow}}:53 {
    import common
    erratic {
        delay 1 {{.SlowBy}}
    }
}
{{- end}}
{{.Servfail}}:53 {
    import common
    template ANY ANY {
        rcode SERVFAIL
    }
}
{{.Refused}}:53 {
    import common
    template ANY ANY {
        rcode REFUSED
    }
}
{{.NoError}}:53 {
    import common
    template IN A {
        answer "{{"{{ .Name }}"}} 60 IN A {{.NoErrorA}}"
    }
    template IN AAAA {
        answer "{{"{{ .Name }}"}} 60 IN AAAA {{.NoErrorAAAA}}"
    }
    template ANY ANY {
        rcode NOERROR
    }
}
.:53 {
    import common
{{- if not .Kubeconfig}}
    ready {{.Ready}}
{{- end}}
    template ANY ANY {
        rcode NXDOMAIN
    }
}
`))

// Start runs CoreDNS in pod and waits until it is ready. ctx bounds the start only; the server
// runs until Stop.
func Start(ctx context.Context, pod *podnet.Pod, opts Options) (_ *Server, err error) {
	if pod == nil {
		return nil, errors.New("coredns: Start needs a pod (podnet.Node.AttachPod)")
	}
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = "cluster.local"
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	bin := opts.Binary
	if bin == "" {
		if bin, err = EnsureBinary(); err != nil {
			return nil, fmt.Errorf("coredns: %w", err)
		}
	}
	s := &Server{Pod: pod, Dir: opts.Dir, done: make(chan struct{})}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "isoobs-coredns-"); err != nil {
			return nil, fmt.Errorf("coredns: %w", err)
		}
		s.removeDir = true
	}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	primary := pod.IPv4
	if !primary.IsValid() {
		primary = pod.IPv6
	}
	for _, a := range []netip.Addr{pod.IPv4, pod.IPv6} {
		if a.IsValid() {
			s.Addrs = append(s.Addrs, a)
		}
	}
	for _, a := range opts.ClusterIPs {
		if err := pod.AddLocalAddress(a); err != nil {
			return nil, fmt.Errorf("coredns: giving the pod ClusterIP %s: %w", a, err)
		}
		s.Addrs = append(s.Addrs, a.Unmap())
	}
	if opts.Kubeconfig != "" {
		if s.stopFwd, err = forwardAPIServer(pod, opts.Kubeconfig); err != nil {
			return nil, fmt.Errorf("coredns: %w", err)
		}
	}

	binds := make([]string, len(s.Addrs))
	for i, a := range s.Addrs {
		binds[i] = a.String()
	}
	var cf bytes.Buffer
	if err := corefileTmpl.Execute(&cf, map[string]any{
		"Binds":         binds,
		"Metrics":       netip.AddrPortFrom(primary, MetricsPort).String(),
		"Ready":         netip.AddrPortFrom(primary, ReadyPort).String(),
		"Log":           opts.LogQueries,
		"Kubeconfig":    opts.Kubeconfig,
		"ClusterDomain": strings.TrimSuffix(opts.ClusterDomain, "."),
		"Servfail":      ServfailZone,
		"Refused":       RefusedZone,
		"NoError":       NoErrorZone,
		"Slow":          SlowZone,
		"SlowBy":        durationArg(opts.SlowBy),
		"NoErrorA":      NoErrorA,
		"NoErrorAAAA":   NoErrorAAAA,
	}); err != nil {
		return nil, fmt.Errorf("coredns: rendering Corefile: %w", err)
	}
	s.Corefile = filepath.Join(s.Dir, "Corefile")
	if err := os.WriteFile(s.Corefile, cf.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("coredns: %w", err)
	}
	s.LogPath = filepath.Join(s.Dir, "coredns.log")
	logf, err := os.Create(s.LogPath)
	if err != nil {
		return nil, fmt.Errorf("coredns: %w", err)
	}
	defer logf.Close()
	s.MetricsURL = "http://" + netip.AddrPortFrom(primary, MetricsPort).String() + "/metrics"

	// Its own lifetime, not ctx's: ctx only bounds the start.
	s.cmd = pod.Command(context.Background(), bin, "-conf", s.Corefile)
	s.cmd.Dir = s.Dir
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("coredns: starting %s in pod %s: %w", bin, pod, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	readyURL := "http://" + netip.AddrPortFrom(primary, ReadyPort).String() + "/ready"
	if err := s.waitReady(ctx, readyURL, opts.ReadyTimeout); err != nil {
		return nil, err
	}
	return s, nil
}

// probeName is asked on every address and transport before Start returns; it shows up in
// CoreDNS's counters, so tests compare deltas taken after Start.
const probeName = "ready-probe." + NoErrorZone

// answers reports whether CoreDNS answers a query on addr over network ("udp" or "tcp").
// The ready plugin says 200 once its plugins are ready, which may be before every DNS
// listener is open, so Start also asks each one.
func answers(ctx context.Context, network string, addr netip.AddrPort) bool {
	name := dnsmessage.MustNewName(probeName)
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x5eed, RecursionDesired: true})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, _ := b.Finish()
	d := net.Dialer{Timeout: 500 * time.Millisecond}
	c, err := d.DialContext(ctx, network, addr.String())
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if network == "tcp" {
		q = append([]byte{byte(len(q) >> 8), byte(len(q))}, q...)
	}
	if _, err := c.Write(q); err != nil {
		return false
	}
	buf := make([]byte, 1024)
	header := 12 // a DNS header, after the 2-byte length on TCP
	if network == "tcp" {
		header += 2
	}
	n, err := io.ReadAtLeast(c, buf, header)
	if err != nil {
		return false
	}
	if network == "tcp" {
		buf, n = buf[2:], n-2
	}
	var p dnsmessage.Parser
	h, err := p.Start(buf[:n])
	return err == nil && h.ID == 0x5eed && h.Response
}

// forwardAPIServer makes the kubeconfig's API server reachable from inside the pod when it
// listens on the host's loopback.
func forwardAPIServer(pod *podnet.Pod, kubeconfig string) (func(), error) {
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig %s: %w", kubeconfig, err)
	}
	ctxName := cfg.CurrentContext
	kctx, ok := cfg.Contexts[ctxName]
	if !ok {
		return nil, fmt.Errorf("kubeconfig %s has no current context", kubeconfig)
	}
	cluster, ok := cfg.Clusters[kctx.Cluster]
	if !ok {
		return nil, fmt.Errorf("kubeconfig %s: context %q names unknown cluster %q", kubeconfig, ctxName, kctx.Cluster)
	}
	u, err := url.Parse(cluster.Server)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("kubeconfig %s: bad server URL %q", kubeconfig, cluster.Server)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "443"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return func() {}, nil // reachable through the pod's default route
	}
	addr := net.JoinHostPort(host, port)
	return pod.ForwardTCP(addr, addr)
}

func (s *Server) waitReady(ctx context.Context, readyURL string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, readyURL, nil)
		if resp, err := hc.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && s.allListening(ctx) {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("coredns: exited during start (%v); log %s:\n%s", s.waitErr, s.LogPath, s.logTail(30))
		case <-ctx.Done():
			return fmt.Errorf("coredns: not ready at %s after %s (kubernetes plugin not synced with the API server?); log %s:\n%s", readyURL, timeout, s.LogPath, s.logTail(30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) allListening(ctx context.Context) bool {
	for _, a := range s.Addrs {
		for _, network := range []string{"udp", "tcp"} {
			if !answers(ctx, network, netip.AddrPortFrom(a, DNSPort)) {
				return false
			}
		}
	}
	return true
}

func (s *Server) logTail(n int) string {
	b, _ := os.ReadFile(s.LogPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// PID of the CoreDNS process.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop ends CoreDNS (SIGTERM, then SIGKILL after 5s) and its API forwarder.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.done
			}
		}
		if s.stopFwd != nil {
			s.stopFwd()
		}
		if s.removeDir {
			_ = os.RemoveAll(s.Dir)
		}
	})
}

// durationArg is d as a Corefile duration ("50ms"); empty for 0.
func durationArg(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}
