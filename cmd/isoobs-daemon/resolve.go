package main

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/net/dns/dnsmessage"
)

// The resolve subcommand is the probe of `kubectl isoobs verify --dns`: the daemon image runs
// as a short-lived pod with `isoobs-daemon resolve NAME...`, which sends exactly one A query
// per name (the name as given, made absolute: no search list, no retry, no AAAA) to the pod's
// nameserver, one after another, and prints one JSON line saying what it sent and got. The
// plugin then checks that the node's daemon counted exactly those queries. The JSON is
// verify.DNSProbeReport (a test keeps them equal).

// resolveReport is what `resolve` prints.
type resolveReport struct {
	Server  string          `json:"server"`
	Results []resolveResult `json:"results"`
}

type resolveResult struct {
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	Sent      bool     `json:"sent"`
	Rcode     string   `json:"rcode,omitempty"`
	Answers   []string `json:"answers,omitempty"`
	LatencyMS float64  `json:"latencyMs"`
	Error     string   `json:"error,omitempty"`
}

func newResolveCommand() *cobra.Command {
	var (
		server     string
		resolvConf string
		timeout    time.Duration
		delay      time.Duration
		linger     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "resolve NAME...",
		Short: "Send one DNS A query per name to this pod's nameserver and print what came back as JSON (the probe of kubectl isoobs verify --dns)",
		Example: `  isoobs-daemon resolve kubernetes.default.svc.cluster.local isoobs-verify.invalid example.com
  isoobs-daemon resolve --server 10.96.0.10:53 --timeout 2s example.com`,
		Args:          cobra.MinimumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, names []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s must be positive", timeout)
			}
			if server == "" {
				var err error
				if server, err = nameserver(resolvConf); err != nil {
					return err
				}
			} else if _, _, err := net.SplitHostPort(server); err != nil {
				server = net.JoinHostPort(server, "53")
			}
			for _, n := range names {
				if _, err := absName(n); err != nil {
					return err
				}
			}
			time.Sleep(delay)
			rep := resolveNames(server, names, timeout)
			if err := json.NewEncoder(cmd.OutOrStdout()).Encode(rep); err != nil {
				return err
			}
			time.Sleep(linger)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "DNS server host[:port] (default: the first nameserver of --resolv-conf)")
	f.StringVar(&resolvConf, "resolv-conf", "/etc/resolv.conf", "where to read the nameserver from")
	f.DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for each answer (no retry: a lost query stays one query)")
	f.DurationVar(&delay, "delay", 0, "wait this long before the first query (so the node's daemon knows the pod before it sends)")
	f.DurationVar(&linger, "linger", 0, "stay this long after the last answer: the node's daemon names a pod's counts from its cgroup directory, which goes when the process exits")
	return cmd
}

// nameserver is the first nameserver line of a resolv.conf, as host:53.
func nameserver(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading the nameserver: %w (pass --server)", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			addr, err := netip.ParseAddr(fields[1])
			if err != nil {
				continue
			}
			return netip.AddrPortFrom(addr.WithZone(""), 53).String(), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return "", fmt.Errorf("%s has no nameserver line (pass --server)", path)
}

func absName(n string) (dnsmessage.Name, error) {
	if !strings.HasSuffix(n, ".") {
		n += "."
	}
	name, err := dnsmessage.NewName(n)
	if err != nil || n == "." || strings.HasPrefix(n, ".") || strings.Contains(n, "..") {
		return name, fmt.Errorf("%q is not a DNS name", strings.TrimSuffix(n, "."))
	}
	return name, nil
}

func resolveNames(server string, names []string, timeout time.Duration) resolveReport {
	rep := resolveReport{Server: server, Results: make([]resolveResult, 0, len(names))}
	for _, n := range names {
		rep.Results = append(rep.Results, resolveOne(server, n, timeout))
	}
	return rep
}

// resolveOne sends one A query over UDP and waits for its answer (matched by ID and question;
// anything else arriving on the socket is ignored).
func resolveOne(server, n string, timeout time.Duration) resolveResult {
	res := resolveResult{Name: strings.TrimSuffix(n, "."), Type: "A"}
	name, err := absName(n)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	q := dnsmessage.Question{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	msg := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true}, Questions: []dnsmessage.Question{q}}
	wire, err := msg.Pack()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	conn, err := net.Dial("udp", server)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetDeadline(start.Add(timeout))
	if _, err := conn.Write(wire); err != nil {
		res.Error = err.Error()
		return res
	}
	res.Sent = true
	buf := make([]byte, 4096)
	for {
		nr, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				res.Error = fmt.Sprintf("no answer within %s", timeout)
			} else if !errors.Is(err, io.EOF) {
				res.Error = err.Error()
			}
			return res
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:nr])
		if err != nil || h.ID != id || !h.Response {
			continue
		}
		aq, err := p.Question()
		if err != nil || aq.Name != q.Name || aq.Type != q.Type {
			continue
		}
		res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
		res.Rcode = rcodeName(h.RCode)
		_ = p.SkipAllQuestions()
		for {
			ah, err := p.AnswerHeader()
			if err != nil {
				break
			}
			if ah.Type == dnsmessage.TypeA {
				if a, err := p.AResource(); err == nil {
					res.Answers = append(res.Answers, netip.AddrFrom4(a.A).String())
					continue
				}
				break
			}
			if err := p.SkipAnswer(); err != nil {
				break
			}
		}
		return res
	}
}

// rcodeName names an rcode as the daemon's metrics and top dns do.
func rcodeName(rc dnsmessage.RCode) string {
	switch rc {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	}
	return fmt.Sprintf("RCODE%d", int(rc))
}
