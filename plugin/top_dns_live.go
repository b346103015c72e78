package plugin

import (
	"context"
	"errors"

	tea "github.com/charmbracelet/bubbletea"
	"google.golang.org/protobuf/proto"

	"github.com/isoobs/isoobs/plugin/top"
	"github.com/isoobs/isoobs/plugin/tui"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// liveGroups are the groupings the live view's g/G cycle through: qname needs per-name
// counts, which a look-back (--since) does not have; server needs per-server counts, which
// neither a look-back nor a name filter has.
func liveGroups(lookBack, nameFilter bool) []string {
	var out []string
	for _, g := range top.GroupBys {
		if (lookBack && g == top.GroupByQName) || ((lookBack || nameFilter) && g == top.GroupByServer) {
			continue
		}
		out = append(out, g)
	}
	return out
}

// streamLive feeds the live view: the daemons' merged frames, until the view asks for another
// grouping on regroup — then the streams are opened again with it — or the streams end.
func streamLive(ctx context.Context, prog *tea.Program, sources []top.Source, opts top.StreamOptions, regroup <-chan string) {
	for {
		sctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func(opts top.StreamOptions) {
			done <- top.Stream(sctx, sources, opts, func(f top.Frame) error {
				prog.Send(tui.FrameMsg{Frame: f})
				return nil
			})
		}(opts)
		select {
		case g := <-regroup:
			stop()
			_ = <-done // the stream of the old grouping, ended by stop
			opts = regrouped(opts, g)
			continue
		case err := <-done:
			stop()
			if err != nil && ctx.Err() == nil {
				prog.Send(tui.ErrMsg{Err: err})
			} else if err == nil {
				prog.Send(tui.ErrMsg{Err: errors.New("the isoobs daemon closed the stream")})
			}
		case <-ctx.Done():
			stop()
			_ = <-done // ended by the interrupt
		}
		return
	}
}

// regrouped is opts asking for groupBy (already checked: one of top.GroupBys).
func regrouped(opts top.StreamOptions, groupBy string) top.StreamOptions {
	_, g, err := top.ParseGroupBy(groupBy)
	if err != nil {
		return opts
	}
	req := proto.Clone(opts.Request).(*isoobsv1.TopRequest)
	req.GroupBy = g
	opts.Request = req
	opts.Merge.GroupBy = groupBy
	return opts
}
