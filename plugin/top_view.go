package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// viewRun is what top tcp, top drops and top http share around their own frames: Ctrl-C, the
// daemons' streams (every node, --daemon or --local), the version-skew warning, and printing
// the frames — one after the other, a plain redraw on a terminal, or the one frame of
// --once/--duration.
type viewRun struct {
	s       *TopDNSOptions
	ctx     context.Context // ended by Ctrl-C
	sources []top.Source
	opts    top.StreamOptions
	close   func()
}

// shownFrame is one frame of a view, ready to print.
type shownFrame struct {
	since, at time.Time
	warnings  []string
	// title follows "isoobs top " on the live view's first line (e.g. "tcp").
	title string
	print func(w io.Writer, yamlDocs *int) error
}

// startView opens the daemons' streams for req; the caller closes the run.
func (s *TopDNSOptions) startView(ctx context.Context, req *isoobsv1.TopRequest) (*viewRun, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	open := s.openSources
	if open == nil {
		open = s.defaultSources
	}
	sources, closeSources, err := open(ctx)
	if err != nil {
		stop()
		return nil, err
	}
	opts := top.StreamOptions{Request: req, Missing: s.missing}
	if !s.Local {
		if w := sourcesVersionSkew(ctx, sources, s.Cluster.ConnectTimeout); w != "" {
			opts.Warnings = append(opts.Warnings, w)
		}
	}
	if s.Once || s.Duration > 0 {
		// The one frame printed waits for every node that answers (up to --connect-timeout after
		// the first), so a node whose frame is a moment late is not left out of the counts.
		opts.MaxWait = max(s.Interval, s.Cluster.ConnectTimeout)
	}
	return &viewRun{s: s, ctx: ctx, sources: sources, opts: opts, close: func() { closeSources(); stop() }}, nil
}

// print runs stream (with the context it must stream under) and prints its frames, sorted by
// sortKey (for the live view's title). It returns nil after Ctrl-C, an error that says what to
// check when --once/--duration got no frame, and stream's error otherwise (for the view to
// explain).
func (v *viewRun) print(sortKey string, stream func(ctx context.Context, emit func(shownFrame) error) error) error {
	s := v.s
	single := s.Once || s.Duration > 0
	live := !single && (s.Output == printers.OutputTable || s.Output == printers.OutputWide) && s.isTerminal(s.Out)
	streamCtx := v.ctx
	wait := s.firstFrameWait + s.Interval + s.Duration
	if single {
		// A daemon that never answers must not hang a scripted call.
		var cancel context.CancelFunc
		streamCtx, cancel = context.WithTimeout(v.ctx, wait)
		defer cancel()
	}
	started := time.Now()
	warned := map[string]bool{}
	printed := false
	yamlDocs := 0
	err := stream(streamCtx, func(f shownFrame) error {
		if s.Duration > 0 && !frameCoversDuration(f.since, f.at, started, s.Duration) {
			return nil
		}
		if live {
			// Home and clear, then the table: a plain redraw, no key handling.
			fmt.Fprint(s.Out, "\x1b[H\x1b[2J")
			fmt.Fprintf(s.Out, "isoobs top %s @ %s  %s  sort %s  (ctrl-c quits)\n", f.title, sourceNames(v.sources), f.at.Format(time.TimeOnly), sortKey)
			for _, w := range f.warnings {
				fmt.Fprintln(s.Out, "warning: "+w)
			}
		} else {
			for _, w := range f.warnings {
				if !warned[w] {
					warned[w] = true
					fmt.Fprintln(s.ErrOut, "warning: "+w)
				}
			}
		}
		if err := f.print(s.Out, &yamlDocs); err != nil {
			return err
		}
		printed = true
		if single {
			return top.ErrStop
		}
		return nil
	})
	switch {
	case v.ctx.Err() != nil:
		return nil
	case single && !printed && (errors.Is(streamCtx.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded):
		return fmt.Errorf("no frame from the isoobs daemon within %s: check that it is running and counting (kubectl isoobs status), or try without --once/--duration", wait)
	case err == nil && single && !printed:
		return errors.New("the isoobs daemon closed the stream before sending a frame: check its logs")
	}
	return err
}

// frameCoversDuration says whether a --duration frame spans the duration asked (within a
// tenth of it, at most 100 ms): by its own since/at, else by the time since the view started.
func frameCoversDuration(since, at, started time.Time, d time.Duration) bool {
	tolerance := min(d/10, 100*time.Millisecond)
	if !since.IsZero() && !at.IsZero() {
		return at.Sub(since) >= d-tolerance
	}
	return time.Since(started) >= d-tolerance
}
