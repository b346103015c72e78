package daemon

import (
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/daemon/podresolver"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// traceSource is the part of *bpf.DNSProbe tracing needs.
type traceSource interface {
	SetTraced(shifts map[uint64]uint8) error
	OpenTrace() (*bpf.TraceReader, error)
}

const (
	// maxTraceStreams bounds the Trace streams a daemon serves at once.
	maxTraceStreams = 8
	// traceQueue is how many events a stream buffers for a slow viewer before it drops
	// (counted, and sent as dropped_before).
	traceQueue = 1024
	// traceRefresh is how often a stream looks for the pod's new containers.
	traceRefresh = 2 * time.Second
)

// tracer shares the probe's one trace ring buffer among the Trace streams: the kernel traces
// the union of their cgroups (at the finest sampling any of them asked for), and each event goes
// to the streams whose pod it belongs to.
type tracer struct {
	src traceSource

	mu     sync.Mutex
	reader *bpf.TraceReader // opened with the first stream
	subs   map[*traceSub]struct{}
	closed bool
}

type traceSub struct {
	containers map[uint64]string // cgroup id -> container name ("" for the pod's own cgroups)
	shift      uint8
	events     chan bpf.TraceEvent
	dropped    atomic.Uint64
}

func newTracer(src traceSource) *tracer {
	return &tracer{src: src, subs: map[*traceSub]struct{}{}}
}

// add starts delivering sub's events; the kernel starts tracing its cgroups.
func (t *tracer) add(sub *traceSub) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return status.Error(codes.Unavailable, "the daemon is shutting down")
	}
	if len(t.subs) >= maxTraceStreams {
		return status.Errorf(codes.ResourceExhausted, "this daemon serves at most %d traces at once and all are open; close another trace of this node, or retry", maxTraceStreams)
	}
	if t.reader == nil {
		rd, err := t.src.OpenTrace()
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		t.reader = rd
		go t.read(rd)
	}
	t.subs[sub] = struct{}{}
	if err := t.applyLocked(); err != nil {
		delete(t.subs, sub)
		_ = t.applyLocked()
		return err
	}
	return nil
}

// update replaces sub's cgroups (a container started or ended).
func (t *tracer) update(sub *traceSub, containers map[uint64]string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	sub.containers = containers
	return t.applyLocked()
}

func (t *tracer) remove(sub *traceSub) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.subs, sub)
	_ = t.applyLocked()
}

// applyLocked tells the kernel which cgroups to trace.
func (t *tracer) applyLocked() error {
	shifts := map[uint64]uint8{}
	for sub := range t.subs {
		for id := range sub.containers {
			if cur, ok := shifts[id]; !ok || sub.shift < cur {
				shifts[id] = sub.shift
			}
		}
	}
	if len(shifts) > bpf.MaxTraced {
		return status.Errorf(codes.ResourceExhausted, "the open traces of this node cover %d cgroups, the kernel traces at most %d at once; close another trace", len(shifts), bpf.MaxTraced)
	}
	if err := t.src.SetTraced(shifts); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}

func (t *tracer) read(rd *bpf.TraceReader) {
	for {
		ev, err := rd.Read()
		if err != nil {
			return // closed
		}
		t.mu.Lock()
		for sub := range t.subs {
			if _, ok := sub.containers[ev.CgroupID]; !ok {
				continue
			}
			select {
			case sub.events <- ev:
			default:
				sub.dropped.Add(1)
			}
		}
		t.mu.Unlock()
	}
}

func (t *tracer) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.reader != nil {
		_ = t.reader.Close()
	}
}

// Trace streams one pod's DNS messages until the client goes away.
func (s *server) Trace(req *isoobsv1.TraceRequest, stream isoobsv1.Daemon_TraceServer) error {
	if req.GetNamespace() == "" || req.GetPod() == "" {
		return status.Error(codes.InvalidArgument, "trace one pod: name its namespace and pod (-n NAMESPACE --pod POD)")
	}
	if req.GetSampleShift() > 16 {
		return status.Errorf(codes.InvalidArgument, "sample shift %d: at most 16 (1 in 65,536 queries)", req.GetSampleShift())
	}
	// A tenant traces only where it may read DNS flows.
	if _, err := s.authorizeTop(stream.Context(), &isoobsv1.TopRequest{Namespace: req.GetNamespace()}); err != nil {
		return err
	}
	d := s.d
	if d.tracer == nil {
		return status.Error(codes.Unimplemented, "this daemon's DNS source cannot trace")
	}
	if d.watcher == nil {
		return status.Error(codes.FailedPrecondition, "tracing a pod needs the Kubernetes API to find it; this daemon runs without (--no-kubernetes)")
	}
	pod, ok := d.watcher.Find(req.GetNamespace(), req.GetPod())
	if !ok {
		return status.Errorf(codes.NotFound, "pod %s/%s is not on node %s", req.GetNamespace(), req.GetPod(), d.cfg.NodeName)
	}
	containersOf := func() map[uint64]string {
		// The pod's status may have new containers: look the pod up again.
		if p, ok := d.watcher.Find(pod.Namespace, pod.Name); ok && p.UID == pod.UID {
			pod = p
		}
		out := map[uint64]string{}
		for _, cg := range d.resolver.PodCgroups(pod.UID) {
			out[cg.ID] = pod.Containers[podresolver.ContainerID(cg.Path, *cg.Pod)]
		}
		return out
	}
	sub := &traceSub{containers: containersOf(), shift: uint8(req.GetSampleShift()), events: make(chan bpf.TraceEvent, traceQueue)}
	if len(sub.containers) == 0 {
		return status.Errorf(codes.NotFound, "pod %s/%s has no cgroup under %s on node %s yet", pod.Namespace, pod.Name, d.cfg.CgroupRoot, d.cfg.NodeName)
	}
	if err := d.tracer.add(sub); err != nil {
		return err
	}
	defer d.tracer.remove(sub)
	refresh := time.NewTicker(traceRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-refresh.C:
			if c := containersOf(); !maps.Equal(c, sub.containers) {
				if err := d.tracer.update(sub, c); err != nil {
					return err
				}
			}
		case ev := <-sub.events:
			d.tracer.mu.Lock()
			container := sub.containers[ev.CgroupID]
			d.tracer.mu.Unlock()
			if err := stream.Send(dnsEvent(d.cfg.NodeName, pod.Namespace, pod.Name, container, ev, sub.dropped.Swap(0))); err != nil {
				return err
			}
		}
	}
}

func dnsEvent(node, namespace, pod, container string, ev bpf.TraceEvent, dropped uint64) *isoobsv1.DNSEvent {
	e := &isoobsv1.DNSEvent{
		Time: timestamppb.New(ev.Time), Node: node, Namespace: namespace, Pod: pod, Container: container,
		Kind: ev.Kind.String(), Qname: ev.Name, Qtype: qtypeName(ev.QType), Server: ev.Server.String(),
		Protocol: "udp", DnsId: uint32(ev.DNSID), DroppedBefore: dropped,
	}
	if ev.TCP {
		e.Protocol = "tcp"
	}
	if ev.Kind != bpf.TraceQuery {
		e.Rcode, e.Answers = rcodeName(ev.RCode), uint32(ev.Answers)
	}
	if ev.Latency > 0 {
		e.LatencyMs = float64(ev.Latency) / float64(time.Millisecond)
	}
	return e
}

func qtypeName(t uint16) string {
	name := dnsmessage.Type(t).String()
	if n, ok := strings.CutPrefix(name, "Type"); ok && n != "" && !strings.ContainsAny(n[:1], "0123456789") {
		return n
	}
	return fmt.Sprintf("TYPE%d", t)
}

func rcodeName(rc uint8) string {
	switch rc {
	case 0:
		return "NOERROR"
	case 2:
		return "SERVFAIL"
	case 3:
		return "NXDOMAIN"
	case 5:
		return "REFUSED"
	}
	return fmt.Sprintf("RCODE%d", rc)
}
