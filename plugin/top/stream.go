package top

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// Source is one daemon to read frames from: a node's daemon through a
// port-forward, an address given with --daemon, or the in-process engine.
type Source struct {
	// Name says which daemon this is in errors and warnings (node or address).
	Name   string
	Client isoobsv1.DaemonClient
}

// StreamOptions controls Stream.
type StreamOptions struct {
	Request *isoobsv1.TopRequest
	Merge   MergeOptions
	// MaxWait is how long a merged frame waits for slow sources before it
	// is emitted with the frames at hand (default: the request interval).
	MaxWait time.Duration
	// Missing are nodes known to be left out before streaming starts (no
	// daemon, unreachable); every frame lists them with the sources that
	// fail while streaming.
	Missing []MissingNode
	// Warnings known before streaming starts (e.g. version skew) go with every frame.
	Warnings []string
}

// ErrStop, returned by an emit callback, ends Stream without error.
var ErrStop = errors.New("stop streaming")

type sourceEvent struct {
	index int
	frame *isoobsv1.TopFrame
	err   error
}

// Stream opens one Top stream per source and calls emit with a merged frame
// whenever every live source has sent a new frame, or MaxWait after the
// first new frame when some sources lag. A source whose stream fails is
// dropped with a warning while others remain; one that closes cleanly keeps
// its last frame in the merge. Stream returns when every source has ended
// (with the first failure, if any), ctx is done, or emit returns an error
// (ErrStop: nil).
func Stream(ctx context.Context, sources []Source, opts StreamOptions, emit func(Frame) error) error {
	if len(sources) == 0 {
		return errors.New("no isoobs daemon to read from")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	events := make(chan sourceEvent)
	for i, src := range sources {
		// Streams open concurrently, and a source that cannot open is
		// dropped like one that fails later: one bad node of hundreds must
		// not cost the others their view.
		go readSource(ctx, i, src, opts.Request, events)
	}

	interval := opts.Request.GetInterval().AsDuration()
	if interval <= 0 {
		interval = time.Second
	}
	maxWait := opts.MaxWait
	if maxWait <= 0 {
		maxWait = interval
	}
	fan := newFanIn(sources, opts)
	fan.staleAfter = staleIntervals * interval
	var wait <-chan time.Time
	emitMerged := func() error {
		frame, ok := fan.merge()
		if !ok {
			return nil
		}
		wait = nil
		if err := emit(frame); err != nil {
			if errors.Is(err, ErrStop) {
				return errStopped
			}
			return err
		}
		return nil
	}
	for {
		var err error
		select {
		case ev := <-events:
			if ev.err != nil {
				if fan.end(ev.index, ev.err) {
					err = emitMerged()
				}
				if err == nil && fan.done() {
					return fan.firstErr
				}
			} else if fan.add(ev.index, ev.frame) {
				err = emitMerged()
			} else if wait == nil {
				wait = time.After(maxWait)
			}
		case <-wait:
			if fan.anyFresh() {
				err = emitMerged()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		if errors.Is(err, errStopped) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// errStopped is emit's ErrStop inside Stream (emit may wrap ErrStop).
var errStopped = errors.New("stopped by emit")

// readSource sends source i's frames, then its end (io.EOF or the error), to events.
func readSource(ctx context.Context, i int, src Source, req *isoobsv1.TopRequest, events chan<- sourceEvent) {
	stream, err := src.Client.Top(ctx, req)
	if err != nil {
		select {
		case events <- sourceEvent{index: i, err: err}:
		case <-ctx.Done():
		}
		return
	}
	for {
		f, err := stream.Recv()
		select {
		case events <- sourceEvent{index: i, frame: f, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// staleIntervals is how many request intervals without a frame make a streaming source stale.
const staleIntervals = 3

// fanIn holds what Stream knows of its sources between events: each one's
// latest frame, whether it is new since the last merge, and how its stream
// ended. Stream's loop feeds it one event at a time, so its rules are tested
// without goroutines or timers.
type fanIn struct {
	sources   []Source
	mergeOpts MergeOptions
	request   *isoobsv1.TopRequest
	latest    []*isoobsv1.TopFrame
	at        []time.Time // when latest arrived
	fresh     []bool
	ended     []error // nil: streaming; io.EOF: closed cleanly; else the failure
	alive     int
	warnings  []string      // go with every merged frame
	missing   []MissingNode // nodes left out, before or while streaming
	firstErr  error
	// staleAfter: a source still streaming whose latest frame is older is left out of merges
	// (0: never). now is the clock (tests set it).
	staleAfter time.Duration
	now        func() time.Time
}

func newFanIn(sources []Source, opts StreamOptions) *fanIn {
	f := &fanIn{
		sources:   sources,
		mergeOpts: opts.Merge,
		request:   opts.Request,
		latest:    make([]*isoobsv1.TopFrame, len(sources)),
		at:        make([]time.Time, len(sources)),
		now:       time.Now,
		fresh:     make([]bool, len(sources)),
		ended:     make([]error, len(sources)),
		alive:     len(sources),
		warnings:  append([]string(nil), opts.Warnings...),
		missing:   append([]MissingNode(nil), opts.Missing...),
	}
	for _, m := range opts.Missing {
		f.warnings = append(f.warnings, fmt.Sprintf("node %s left out: %s", m.Node, m.Reason))
	}
	return f
}

// add records source i's new frame and says whether a merge is due: every
// source still streaming has sent a frame since the last merge.
func (f *fanIn) add(i int, frame *isoobsv1.TopFrame) bool {
	f.latest[i] = frame
	f.at[i] = f.now()
	f.fresh[i] = true
	return f.ready()
}

// end records that source i's stream ended with err and says whether a
// merge is due. A cleanly closed stream (io.EOF) keeps its last frame in the
// merge; a failed one is dropped and listed as a missing node.
func (f *fanIn) end(i int, err error) bool {
	f.alive--
	if errors.Is(err, io.EOF) {
		f.ended[i] = io.EOF
		f.warnings = append(f.warnings, f.sources[i].Name+": daemon closed the stream")
	} else {
		f.ended[i] = sourceError(f.sources[i], err)
		f.fresh[i] = false
		f.warnings = append(f.warnings, f.ended[i].Error())
		f.missing = append(f.missing, MissingNode{Node: f.sources[i].Name, Reason: f.ended[i].Error()})
		if f.firstErr == nil {
			f.firstErr = f.ended[i]
		}
	}
	return (f.alive == 0 || f.ready()) && f.anyFresh()
}

// done says every source's stream has ended.
func (f *fanIn) done() bool { return f.alive == 0 }

// ready: every source still streaming has sent a frame since the last merge.
func (f *fanIn) ready() bool {
	for i := range f.sources {
		if f.ended[i] == nil && !f.fresh[i] {
			return false
		}
	}
	return true
}

func (f *fanIn) anyFresh() bool {
	for _, fresh := range f.fresh {
		if fresh {
			return true
		}
	}
	return false
}

// merge starts a new round and returns the merged frame of the latest frames
// of the sources not failed; ok is false when there is none.
func (f *fanIn) merge() (frame Frame, ok bool) {
	var frames []*isoobsv1.TopFrame
	var stale []StaleNode
	now := f.now()
	for i, latest := range f.latest {
		switch {
		case latest == nil || (f.ended[i] != nil && f.ended[i] != io.EOF):
		case f.ended[i] == nil && f.staleAfter > 0 && now.Sub(f.at[i]) > f.staleAfter:
			stale = append(stale, StaleNode{Node: f.sources[i].Name, LastFrame: f.at[i]})
		default:
			frames = append(frames, latest)
		}
		f.fresh[i] = false
	}
	if len(frames) == 0 {
		return Frame{}, false
	}
	frame = Merge(frames, f.mergeOpts)
	scopeOf(&frame, f.request)
	frame.Warnings = append(frame.Warnings, f.warnings...)
	for _, s := range stale {
		frame.Warnings = append(frame.Warnings, fmt.Sprintf("%s: no frame for %s (stream stalled); its rows are left out", s.Node, now.Sub(s.LastFrame).Round(time.Second)))
	}
	frame.MissingNodes = append(frame.MissingNodes, f.missing...)
	frame.StaleNodes = append(frame.StaleNodes, stale...)
	return frame, true
}

// sourceError names the daemon and, for the usual failures, what to check.
func sourceError(src Source, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("isoobs daemon %s: %w", src.Name, err)
	}
	// The messages drop gRPC's prefix; the wrapped error keeps its status
	// code for callers (status.Code sees through the wrapping).
	var msg string
	switch st.Code() {
	case codes.Unavailable:
		msg = fmt.Sprintf("cannot reach the isoobs daemon at %s: %s (is isoobs-daemon running and listening there?)", src.Name, st.Message())
	case codes.Unimplemented:
		msg = fmt.Sprintf("the server at %s is not an isoobs daemon or is too old for `top dns`: %s", src.Name, st.Message())
	case codes.InvalidArgument:
		msg = fmt.Sprintf("the isoobs daemon at %s rejected the request: %s", src.Name, st.Message())
	default:
		msg = fmt.Sprintf("isoobs daemon %s: %s: %s", src.Name, st.Code(), st.Message())
	}
	return &daemonError{msg: msg, err: err}
}

type daemonError struct {
	msg string
	err error
}

func (e *daemonError) Error() string { return e.msg }
func (e *daemonError) Unwrap() error { return e.err }

// GRPCStatus lets status.Code and status.FromError read the daemon's code.
func (e *daemonError) GRPCStatus() *status.Status {
	st, _ := status.FromError(e.err)
	return st
}

// DaemonTarget checks a --daemon address (host:port or unix:///path) and
// returns the gRPC target for it.
func DaemonTarget(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	const hint = "expected host:port (e.g. 127.0.0.1:7070) or unix:///path/to/isoobs.sock"
	if addr == "" {
		return "", fmt.Errorf("empty --daemon address: %s", hint)
	}
	if strings.HasPrefix(addr, "unix:") || strings.HasPrefix(addr, "unix-abstract:") {
		path := strings.TrimPrefix(strings.TrimPrefix(addr, "unix:"), "//")
		if strings.TrimPrefix(path, "unix-abstract:") == "" {
			return "", fmt.Errorf("invalid --daemon %q: no socket path; %s", addr, hint)
		}
		return addr, nil
	}
	if strings.Contains(addr, "://") {
		return "", fmt.Errorf("invalid --daemon %q: only unix:// sockets or plain host:port are supported; %s", addr, hint)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("invalid --daemon %q: %s", addr, hint)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return "passthrough:///" + net.JoinHostPort(host, port), nil
}

// DialDaemon connects lazily to a daemon at a --daemon address; connection
// errors surface on the first call. The daemon API is plaintext: remote
// daemons are reached through a port-forward or a local socket.
func DialDaemon(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	target, err := DaemonTarget(addr)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(target, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("invalid --daemon %q: %w", addr, err)
	}
	return conn, nil
}
