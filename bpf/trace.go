package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// MaxTraced is how many cgroups can be traced at once (the kernel's traced map).
const MaxTraced = 64

// TraceKind says what a traced message was.
type TraceKind uint8

// Trace kinds, mirroring enum trace_kind in dns.c.
const (
	TraceQuery       TraceKind = iota // a query the pod sent
	TraceAnswer                       // an answer matched with its query (Latency set)
	TraceLate                         // matched, after Options.DNSTimeout (also a timeout)
	TraceUnchecked                    // counted without a check: the pod is sampled, or its query was evicted
	TraceUnsolicited                  // matched no query the pod had pending; not counted as a response
)

func (k TraceKind) String() string {
	switch k {
	case TraceQuery:
		return "query"
	case TraceAnswer:
		return "answer"
	case TraceLate:
		return "late-answer"
	case TraceUnchecked:
		return "answer-unchecked"
	case TraceUnsolicited:
		return "unsolicited"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// TraceEvent is one DNS message a traced pod sent or received.
type TraceEvent struct {
	Time       time.Time
	CgroupID   uint64 // the sending or receiving socket's cgroup (the container's)
	Kind       TraceKind
	Name       string // presentation format, escaped like every name the probe reports
	QType      uint16
	RCode      uint8  // answers only
	Answers    uint16 // ANCOUNT, answers only
	Latency    time.Duration
	Server     netip.AddrPort
	ClientPort uint16
	DNSID      uint16
	TCP        bool
}

// SetTraced makes the kernel send the messages of exactly these cgroups to the trace reader,
// 1 in 2^shift of each one's queries with their answers (0: all); an empty map stops tracing.
// The other pods' cost is one load per DNS message while nothing is traced.
func (p *DNSProbe) SetTraced(shifts map[uint64]uint8) error {
	if len(shifts) > MaxTraced {
		return fmt.Errorf("dns probe: %d cgroups to trace, at most %d at once", len(shifts), MaxTraced)
	}
	p.traceMu.Lock()
	defer p.traceMu.Unlock()
	var id uint64
	var stale []uint64
	for key := any(nil); ; key = id {
		if err := p.objs.Traced.NextKey(key, &id); errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		} else if err != nil {
			return fmt.Errorf("dns probe: list traced cgroups: %w", err)
		}
		if _, keep := shifts[id]; !keep {
			stale = append(stale, id)
		}
	}
	for id, shift := range shifts {
		if err := p.objs.Traced.Put(id, uint32(min(shift, 31))); err != nil {
			return fmt.Errorf("dns probe: trace cgroup %d: %w", id, err)
		}
	}
	// trace_on before the deletes: a stale entry left a moment is harmless, a
	// count of 0 while entries remain only delays them.
	if err := p.objs.TraceOn.Put(uint32(0), uint32(len(shifts))); err != nil {
		return fmt.Errorf("dns probe: switch tracing: %w", err)
	}
	for _, id := range stale {
		if err := p.objs.Traced.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("dns probe: stop tracing cgroup %d: %w", id, err)
		}
	}
	return nil
}

// TraceReader reads the traced messages.
type TraceReader struct {
	rd *ringbuf.Reader
	// bootOffset turns bpf_ktime_get_ns (CLOCK_MONOTONIC) into wall-clock time.
	bootOffset time.Duration
}

// OpenTrace opens a reader of the trace ring buffer; one reader per probe.
func (p *DNSProbe) OpenTrace() (*TraceReader, error) {
	rd, err := ringbuf.NewReader(p.objs.TraceEvents)
	if err != nil {
		return nil, fmt.Errorf("dns probe: open trace ring buffer: %w", err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		rd.Close()
		return nil, err
	}
	return &TraceReader{rd: rd, bootOffset: time.Duration(time.Now().UnixNano() - ts.Nano())}, nil
}

// Read blocks until the next event; after Close it returns ringbuf.ErrClosed.
func (r *TraceReader) Read() (TraceEvent, error) {
	rec, err := r.rd.Read()
	if err != nil {
		return TraceEvent{}, err
	}
	var raw dnsTraceEvent
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &raw); err != nil {
		return TraceEvent{}, fmt.Errorf("dns probe: trace event of %d bytes: %w", len(rec.RawSample), err)
	}
	return decodeTraceEvent(&raw, r.bootOffset), nil
}

// Close stops Read.
func (r *TraceReader) Close() error { return r.rd.Close() }

func decodeTraceEvent(raw *dnsTraceEvent, bootOffset time.Duration) TraceEvent {
	ev := TraceEvent{
		Time:       time.Unix(0, int64(raw.TimeNs)+int64(bootOffset)),
		CgroupID:   raw.CgroupId,
		Kind:       TraceKind(raw.Kind),
		QType:      raw.Qtype,
		RCode:      raw.Rcode,
		Answers:    raw.Ancount,
		Latency:    time.Duration(raw.LatencyNs),
		ClientPort: raw.ClientPort,
		DNSID:      raw.DnsId,
		TCP:        raw.Proto == unix.IPPROTO_TCP,
	}
	if ev.Kind == TraceQuery {
		ev.RCode, ev.Answers = 0, 0
	}
	addr := netip.AddrFrom16(raw.Server)
	if raw.Alen == 4 {
		addr = netip.AddrFrom4([4]byte(raw.Server[:4]))
	}
	ev.Server = netip.AddrPortFrom(addr, raw.ServerPort)
	if n := int(raw.WireLen); n > 0 && n <= len(raw.Wire) {
		ev.Name, _ = decodeWireName(raw.Wire[:n])
	}
	return ev
}
