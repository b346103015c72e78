package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
	"github.com/isoobs/isoobs/plugin/tui"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// validateTrace checks --trace's companions: one pod, a power-of-two sample, a stream output.
func (o *TopDNSOptions) validateTrace() error {
	if !o.Trace {
		if o.TraceSample != 1 {
			return errors.New("--trace-sample goes with --trace: add --trace --pod POD")
		}
		return nil
	}
	if o.Pod == "" || o.namespace == "" || o.AllNamespaces {
		return errors.New("--trace follows one pod: name it with -n NAMESPACE --pod POD (or --pod NAMESPACE/POD)")
	}
	if o.TraceSample < 1 || o.TraceSample > 1<<16 || o.TraceSample&(o.TraceSample-1) != 0 {
		return fmt.Errorf("--trace-sample %d: a power of two from 1 (every query) to 65536, e.g. --trace-sample 16", o.TraceSample)
	}
	if o.Once || o.Since > 0 || o.NameRegex != "" || o.Zone != "" || o.Selector != "" {
		return errors.New("--trace streams one pod's messages as they happen: drop --once, --since, --name, --zone and -l (--duration bounds it)")
	}
	if o.Output == printers.OutputYAML {
		return errors.New("--trace prints a table, or one JSON object per message with -o json")
	}
	return nil
}

// traceEvent is one traced message in -o json (one object per line).
type traceEvent struct {
	Time          time.Time `json:"time"`
	Node          string    `json:"node"`
	Namespace     string    `json:"namespace"`
	Pod           string    `json:"pod"`
	Container     string    `json:"container"`
	Kind          string    `json:"kind"`
	QName         string    `json:"qname"`
	QType         string    `json:"qtype"`
	RCode         string    `json:"rcode,omitempty"`
	Answers       uint32    `json:"answers"`
	LatencyMs     float64   `json:"latencyMs,omitempty"`
	Server        string    `json:"server"`
	Protocol      string    `json:"protocol"`
	DNSID         uint32    `json:"dnsId"`
	DroppedBefore uint64    `json:"droppedBefore,omitempty"`
}

// runTrace streams the pod's messages from every daemon (only the pod's node has it) until
// interrupted or --duration ends.
func (o *TopDNSOptions) runTrace(ctx context.Context, sources []top.Source) error {
	if o.Duration > 0 {
		// A timer, not a deadline: gRPC would send a deadline to the daemons, whose end of the
		// stream could then reach us as an error just before ours.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer time.AfterFunc(o.Duration, cancel).Stop()
	}
	req := &isoobsv1.TraceRequest{Namespace: o.namespace, Pod: o.Pod, SampleShift: uint32(bits.TrailingZeros(uint(o.TraceSample)))}
	events := make(chan *isoobsv1.DNSEvent, 256)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var notFound, failed []string
	for _, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := traceOne(ctx, src, req, events)
			if err == nil || ctx.Err() != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if status.Code(err) == codes.NotFound {
				notFound = append(notFound, src.Name)
				return
			}
			failed = append(failed, src.Name+": "+status.Convert(err).Message())
		}()
	}
	go func() { wg.Wait(); close(events) }()

	w := newTraceWriter(o.Out, o.Output, o.NoHeaders)
	for ev := range events {
		if err := w.write(ev); err != nil {
			return err
		}
	}
	for _, f := range failed {
		fmt.Fprintf(o.ErrOut, "warning: trace on %s\n", f)
	}
	if ctx.Err() == nil && len(notFound) == len(sources) {
		return fmt.Errorf("pod %s/%s is on none of the %d node(s) asked: check it runs (kubectl get pod -n %s %s -o wide) and that --node, if given, names its node", o.namespace, o.Pod, len(sources), o.namespace, o.Pod)
	}
	if ctx.Err() == nil && len(failed) > 0 && len(failed)+len(notFound) == len(sources) {
		return errors.New("no daemon could trace the pod: " + strings.Join(failed, "; "))
	}
	return nil
}

func traceOne(ctx context.Context, src top.Source, req *isoobsv1.TraceRequest, out chan<- *isoobsv1.DNSEvent) error {
	stream, err := src.Client.Trace(ctx, req)
	if err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return nil
		}
	}
}

// traceLive feeds the live view's drill-down: each pod it names on drill is traced (1 in
// --trace-sample of its queries) until the next one, or "" (Esc), comes. Messages go to the view
// in batches, ten a second at most, so a flooding pod cannot make it redraw for every one.
func (o *TopDNSOptions) traceLive(ctx context.Context, prog *tea.Program, sources []top.Source, drill <-chan [2]string) {
	stop := func() {}
	defer func() { stop() }()
	for {
		var pod [2]string
		select {
		case <-ctx.Done():
			return
		case pod = <-drill:
		}
		stop()
		if pod[1] == "" {
			stop = func() {}
			continue
		}
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		stop = func() { cancel(); <-done }
		go func() {
			defer close(done)
			o.traceToView(tctx, prog, sources, &isoobsv1.TraceRequest{Namespace: pod[0], Pod: pod[1],
				SampleShift: uint32(bits.TrailingZeros(uint(o.TraceSample)))})
		}()
	}
}

func (o *TopDNSOptions) traceToView(ctx context.Context, prog *tea.Program, sources []top.Source, req *isoobsv1.TraceRequest) {
	events := make(chan *isoobsv1.DNSEvent, 256)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var notFound int
	for _, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := traceOne(ctx, src, req, events)
			if err == nil || ctx.Err() != nil {
				return
			}
			if status.Code(err) == codes.NotFound {
				mu.Lock()
				notFound++
				mu.Unlock()
				return
			}
			prog.Send(tui.TraceErrMsg{Err: fmt.Errorf("%s: %s", src.Name, status.Convert(err).Message())})
		}()
	}
	go func() { wg.Wait(); close(events) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var batch []*isoobsv1.DNSEvent
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				if len(batch) > 0 {
					prog.Send(tui.TraceMsg{Events: batch})
				}
				if ctx.Err() == nil && notFound == len(sources) {
					prog.Send(tui.TraceErrMsg{Err: fmt.Errorf("pod %s/%s is on none of the %d node(s) asked", req.Namespace, req.Pod, len(sources))})
				}
				return
			}
			batch = append(batch, ev)
		case <-tick.C:
			if len(batch) > 0 {
				prog.Send(tui.TraceMsg{Events: batch})
				batch = nil
			}
		}
	}
}

type traceWriter struct {
	out       io.Writer
	json      bool
	tw        *tabwriter.Writer
	noHeaders bool
	header    bool
}

func newTraceWriter(out io.Writer, output string, noHeaders bool) *traceWriter {
	return &traceWriter{out: out, json: output == printers.OutputJSON, noHeaders: noHeaders,
		tw: tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)}
}

// write prints one message as it comes: a table line (flushed at once, fixed-width enough to
// stay aligned) or a JSON object.
func (w *traceWriter) write(ev *isoobsv1.DNSEvent) error {
	if w.json {
		b, err := json.Marshal(traceEvent{Time: ev.GetTime().AsTime(), Node: ev.Node, Namespace: ev.Namespace, Pod: ev.Pod,
			Container: ev.Container, Kind: ev.Kind, QName: ev.Qname, QType: ev.Qtype, RCode: ev.Rcode, Answers: ev.Answers,
			LatencyMs: ev.LatencyMs, Server: ev.Server, Protocol: ev.Protocol, DNSID: ev.DnsId, DroppedBefore: ev.DroppedBefore})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w.out, "%s\n", b)
		return err
	}
	if ev.DroppedBefore > 0 {
		fmt.Fprintf(w.tw, "(%d messages not shown: the viewer or the node's trace buffer could not keep up; raise --trace-sample)\n", ev.DroppedBefore)
	}
	if !w.header && !w.noHeaders {
		fmt.Fprintln(w.tw, strings.Join(printers.TraceHeader, "\t"))
	}
	w.header = true
	fmt.Fprintln(w.tw, strings.Join(printers.TraceRow(ev), "\t"))
	return w.tw.Flush()
}
