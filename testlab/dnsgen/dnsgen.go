// Package dnsgen is the lab's DNS load generator: it sends queries at a chosen rate (or as fast
// as N in-flight queries allow) for a count or a duration, and reports exactly what it sent and
// what came back, so tests can compare it with what CoreDNS and isoobs saw.
//
// Each worker owns one socket and one query in flight, so IDs never collide. Every sent query
// ends in exactly one of answered (by rcode), timeouts or failed: Sent = Answered+Timeouts+Failed.
package dnsgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/time/rate"
)

// Config describes one run. Names and/or RandomSuffix choose the pattern:
// names only → the fixed list (round robin); suffix only → <random>.<suffix>; both → a mix
// where RandomFraction of the queries are random subdomains.
type Config struct {
	Server         netip.AddrPort
	Proto          string   // "udp" (default) or "tcp"
	Names          []string // fixed names, e.g. "kubernetes.default.svc.cluster.local"
	RandomSuffix   string   // e.g. "example.com": queries <12 random chars>.example.com
	RandomFraction float64  // share of random names when both are given (default 0.5)
	QTypes         []string // "A", "AAAA" (default A); cycled per name round
	QPS            float64  // 0: as fast as Concurrency allows
	Concurrency    int      // queries in flight (= sockets), default 1
	Count          int64    // stop after sending this many (0: no limit)
	Duration       time.Duration
	Timeout        time.Duration // per query, default 2s
	PerName        bool          // report counts per query name
	Seed           uint64        // random names; 0: time based

	// Dial opens a worker's socket; default net.Dialer. Lets a caller open sockets in another netns.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error) `json:"-"`
}

// RCodes counts responses by rcode.
type RCodes struct {
	NoError  uint64 `json:"NOERROR"`
	NXDomain uint64 `json:"NXDOMAIN"`
	ServFail uint64 `json:"SERVFAIL"`
	Refused  uint64 `json:"REFUSED"`
	Other    uint64 `json:"other"`
}

func (r *RCodes) add(rc dnsmessage.RCode) {
	switch rc {
	case dnsmessage.RCodeSuccess:
		r.NoError++
	case dnsmessage.RCodeNameError:
		r.NXDomain++
	case dnsmessage.RCodeServerFailure:
		r.ServFail++
	case dnsmessage.RCodeRefused:
		r.Refused++
	default:
		r.Other++
	}
}

func (r *RCodes) merge(o RCodes) {
	r.NoError += o.NoError
	r.NXDomain += o.NXDomain
	r.ServFail += o.ServFail
	r.Refused += o.Refused
	r.Other += o.Other
}

// Total is the number of responses counted.
func (r RCodes) Total() uint64 { return r.NoError + r.NXDomain + r.ServFail + r.Refused + r.Other }

// NameStats are the counts of one query name.
type NameStats struct {
	Sent     uint64 `json:"sent"`
	Answered uint64 `json:"answered"`
	RCodes   RCodes `json:"rcodes"`
}

// Latency is client-side, from send to matching response, exact over all answered queries.
type Latency struct {
	P50Micros float64 `json:"p50_us"`
	P90Micros float64 `json:"p90_us"`
	P99Micros float64 `json:"p99_us"`
	MaxMicros float64 `json:"max_us"`
}

type Report struct {
	Server     string                `json:"server"`
	Proto      string                `json:"proto"`
	Sent       uint64                `json:"sent"`
	Answered   uint64                `json:"answered"`
	Timeouts   uint64                `json:"timeouts"`
	Failed     uint64                `json:"failed"`      // sent, then the connection broke or the answer was malformed
	SendErrors uint64                `json:"send_errors"` // not sent: the write failed
	Discarded  uint64                `json:"discarded"`   // responses matching no query in flight (late answers)
	Truncated  uint64                `json:"truncated"`   // answered with the TC bit (UDP)
	RCodes     RCodes                `json:"rcodes"`
	ByQType    map[string]uint64     `json:"by_qtype"` // sent per qtype
	Names      map[string]*NameStats `json:"names,omitempty"`
	Latency    Latency               `json:"latency"`
	ElapsedSec float64               `json:"elapsed_s"`
	QPS        float64               `json:"qps"` // sent / elapsed
}

var qtypeByName = map[string]dnsmessage.Type{
	"A": dnsmessage.TypeA, "AAAA": dnsmessage.TypeAAAA, "TXT": dnsmessage.TypeTXT, "SRV": dnsmessage.TypeSRV,
	"PTR": dnsmessage.TypePTR, "MX": dnsmessage.TypeMX, "NS": dnsmessage.TypeNS, "SOA": dnsmessage.TypeSOA,
}

// normalize checks cfg and fills defaults; errors say which field is wrong.
func (cfg *Config) normalize() error {
	if !cfg.Server.IsValid() || cfg.Server.Port() == 0 {
		return errors.New("dnsgen: server address missing; give --server IP[:port] (e.g. 10.96.0.10 or [fd96::a]:53)")
	}
	switch cfg.Proto {
	case "":
		cfg.Proto = "udp"
	case "udp", "tcp":
	default:
		return fmt.Errorf("dnsgen: proto %q is not udp or tcp", cfg.Proto)
	}
	if len(cfg.Names) == 0 && cfg.RandomSuffix == "" {
		return errors.New("dnsgen: nothing to ask; give --names and/or --random-suffix")
	}
	names := make([]string, len(cfg.Names)) // the caller's slice stays as it was
	for i, n := range cfg.Names {
		if _, err := buildQuery(0, fqdn(n), dnsmessage.TypeA); err != nil || strings.Trim(n, ". ") == "" {
			return fmt.Errorf("dnsgen: name %q is not a valid DNS name (labels of 1-63 bytes, 255 in all)", n)
		}
		names[i] = fqdn(n)
	}
	cfg.Names = names
	if cfg.RandomSuffix != "" {
		cfg.RandomSuffix = strings.Trim(cfg.RandomSuffix, ".")
		if _, err := buildQuery(0, "abcdefghijkl."+cfg.RandomSuffix+".", dnsmessage.TypeA); err != nil {
			return fmt.Errorf("dnsgen: random suffix %q is not a valid DNS name", cfg.RandomSuffix)
		}
	}
	if cfg.RandomFraction < 0 || cfg.RandomFraction > 1 {
		return fmt.Errorf("dnsgen: random fraction %v is not within 0..1", cfg.RandomFraction)
	}
	if cfg.RandomFraction == 0 && len(cfg.Names) > 0 && cfg.RandomSuffix != "" {
		cfg.RandomFraction = 0.5
	}
	if len(cfg.QTypes) == 0 {
		cfg.QTypes = []string{"A"}
	}
	qtypes := make([]string, len(cfg.QTypes))
	for i, t := range cfg.QTypes {
		t = strings.ToUpper(strings.TrimSpace(t))
		if _, ok := qtypeByName[t]; !ok {
			return fmt.Errorf("dnsgen: qtype %q is not supported (use A, AAAA, TXT, SRV, PTR, MX, NS, SOA)", t)
		}
		qtypes[i] = t
	}
	cfg.QTypes = qtypes
	if cfg.QPS < 0 {
		return fmt.Errorf("dnsgen: qps %v is negative", cfg.QPS)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if cfg.Concurrency < 0 || cfg.Concurrency > 10000 {
		return fmt.Errorf("dnsgen: concurrency %d is not within 1..10000", cfg.Concurrency)
	}
	if cfg.Count < 0 || cfg.Duration < 0 {
		return errors.New("dnsgen: count and duration must not be negative")
	}
	if cfg.Count == 0 && cfg.Duration == 0 {
		return errors.New("dnsgen: give --count and/or --duration so the run ends by itself")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	return nil
}

func fqdn(n string) string {
	n = strings.TrimSpace(n)
	if !strings.HasSuffix(n, ".") {
		n += "."
	}
	return n
}

// worker is one socket with one query in flight; its counts are merged at the end.
type worker struct {
	cfg       *Config
	rng       *rand.Rand
	conn      net.Conn
	buf       []byte
	rep       Report
	latencies []time.Duration
}

// Run sends the queries and returns the report. It returns early (with what it counted) when
// ctx ends; every query sent before that is still waited for, up to its timeout.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	var limiter *rate.Limiter
	if cfg.QPS > 0 {
		limiter = rate.NewLimiter(rate.Limit(cfg.QPS), 1)
	}
	sendCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var seq atomic.Int64 // reserves query numbers: exact counts even with many workers
	workers := make([]*worker, cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range workers {
		w := &worker{cfg: &cfg, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i))), buf: make([]byte, 65536+2)}
		w.rep.ByQType = map[string]uint64{}
		if cfg.PerName {
			w.rep.Names = map[string]*NameStats{}
		}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.closeConn()
			for {
				if sendCtx.Err() != nil {
					return
				}
				n := seq.Add(1) - 1
				if cfg.Count > 0 && n >= cfg.Count {
					return
				}
				if limiter != nil && limiter.Wait(sendCtx) != nil {
					return
				}
				w.query(ctx, n)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	rep := &Report{Server: cfg.Server.String(), Proto: cfg.Proto, ByQType: map[string]uint64{}}
	if cfg.PerName {
		rep.Names = map[string]*NameStats{}
	}
	var lat []time.Duration
	for _, w := range workers {
		rep.Sent += w.rep.Sent
		rep.Answered += w.rep.Answered
		rep.Timeouts += w.rep.Timeouts
		rep.Failed += w.rep.Failed
		rep.SendErrors += w.rep.SendErrors
		rep.Discarded += w.rep.Discarded
		rep.Truncated += w.rep.Truncated
		rep.RCodes.merge(w.rep.RCodes)
		for k, v := range w.rep.ByQType {
			rep.ByQType[k] += v
		}
		for name, s := range w.rep.Names {
			t := rep.Names[name]
			if t == nil {
				t = &NameStats{}
				rep.Names[name] = t
			}
			t.Sent += s.Sent
			t.Answered += s.Answered
			t.RCodes.merge(s.RCodes)
		}
		lat = append(lat, w.latencies...)
	}
	rep.Latency = percentiles(lat)
	rep.ElapsedSec = elapsed.Seconds()
	if elapsed > 0 {
		rep.QPS = float64(rep.Sent) / elapsed.Seconds()
	}
	if rep.Sent == 0 && rep.SendErrors > 0 {
		return rep, fmt.Errorf("dnsgen: no query could be sent to %s/%s (%d send errors); is the server reachable from here?", cfg.Server, cfg.Proto, rep.SendErrors)
	}
	return rep, nil
}

func percentiles(lat []time.Duration) Latency {
	if len(lat) == 0 {
		return Latency{}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	// Nearest-rank percentile.
	at := func(p float64) float64 {
		i := int(p*float64(len(lat))+0.999999) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(lat) {
			i = len(lat) - 1
		}
		return float64(lat[i].Nanoseconds()) / 1e3
	}
	return Latency{P50Micros: at(0.50), P90Micros: at(0.90), P99Micros: at(0.99), MaxMicros: float64(lat[len(lat)-1].Nanoseconds()) / 1e3}
}

const randomAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// pick chooses the n-th query's name and type.
func (w *worker) pick(n int64) (string, string) {
	cfg := w.cfg
	var name string
	useRandom := cfg.RandomSuffix != "" && (len(cfg.Names) == 0 || w.rng.Float64() < cfg.RandomFraction)
	round := n
	if useRandom {
		var b [12]byte
		for i := range b {
			b[i] = randomAlphabet[w.rng.IntN(len(randomAlphabet))]
		}
		name = string(b[:]) + "." + cfg.RandomSuffix + "."
	} else {
		name = cfg.Names[n%int64(len(cfg.Names))]
		round = n / int64(len(cfg.Names))
	}
	return name, cfg.QTypes[round%int64(len(cfg.QTypes))]
}

func (w *worker) closeConn() {
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
}

// query sends query number n and waits for its answer; it counts exactly one outcome.
func (w *worker) query(ctx context.Context, n int64) {
	cfg := w.cfg
	name, qtype := w.pick(n)
	id := uint16(w.rng.Uint32())
	msg, err := buildQuery(id, name, qtypeByName[qtype])
	if err != nil { // names were validated; random ones are valid by construction
		w.rep.SendErrors++
		return
	}
	if w.conn == nil {
		dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		w.conn, err = cfg.Dial(dctx, cfg.Proto, cfg.Server.String())
		cancel()
		if err != nil {
			w.conn = nil
			w.rep.SendErrors++
			time.Sleep(10 * time.Millisecond) // don't spin on a refused connect
			return
		}
	}
	out := msg
	if cfg.Proto == "tcp" {
		out = append([]byte{byte(len(msg) >> 8), byte(len(msg))}, msg...)
	}
	_ = w.conn.SetDeadline(time.Now().Add(cfg.Timeout))
	sentAt := time.Now()
	if _, err := w.conn.Write(out); err != nil {
		w.rep.SendErrors++
		w.closeConn()
		return
	}
	w.rep.Sent++
	w.rep.ByQType[qtype]++
	var ns *NameStats
	if w.rep.Names != nil {
		if ns = w.rep.Names[name]; ns == nil {
			ns = &NameStats{}
			w.rep.Names[name] = ns
		}
		ns.Sent++
	}
	for {
		resp, err := w.read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				w.rep.Timeouts++
			} else {
				w.rep.Failed++
			}
			if cfg.Proto == "tcp" || !(errors.As(err, &ne) && ne.Timeout()) {
				w.closeConn() // the stream may still carry this answer: start clean
			}
			return
		}
		h, ok := matchResponse(resp, id, name, qtypeByName[qtype])
		if !ok {
			w.rep.Discarded++
			continue
		}
		w.latencies = append(w.latencies, time.Since(sentAt))
		w.rep.Answered++
		w.rep.RCodes.add(h.RCode)
		if h.Truncated {
			w.rep.Truncated++
		}
		if ns != nil {
			ns.Answered++
			ns.RCodes.add(h.RCode)
		}
		return
	}
}

// read returns one DNS message from the worker's socket.
func (w *worker) read() ([]byte, error) {
	if w.cfg.Proto == "udp" {
		n, err := w.conn.Read(w.buf)
		return w.buf[:n], err
	}
	if _, err := readFull(w.conn, w.buf[:2]); err != nil {
		return nil, err
	}
	l := int(w.buf[0])<<8 | int(w.buf[1])
	if _, err := readFull(w.conn, w.buf[2:2+l]); err != nil {
		return nil, err
	}
	return w.buf[2 : 2+l], nil
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func buildQuery(id uint16, name string, qtype dnsmessage.Type) ([]byte, error) {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 64), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: n, Type: qtype, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	return b.Finish()
}

// matchResponse parses a response header and question and reports whether it answers the query
// (same ID, a response, same question). Any input is safe: malformed messages do not match.
func matchResponse(msg []byte, id uint16, name string, qtype dnsmessage.Type) (dnsmessage.Header, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || !h.Response || h.ID != id {
		return h, false
	}
	q, err := p.Question()
	if err != nil {
		// A FORMERR/SERVFAIL may come without a question; accept it on the ID alone.
		return h, errors.Is(err, dnsmessage.ErrSectionDone) && h.RCode != dnsmessage.RCodeSuccess
	}
	return h, q.Type == qtype && strings.EqualFold(q.Name.String(), name)
}
