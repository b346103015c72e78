// hubble-replay serves flows written in Hubble's JSON export format (`hubble observe -o json`,
// the exporter's events.log) over Hubble's real observer API, for demos and tests where Cilium
// cannot run: `hubble observe --server ADDR`, `hubble status` and `isoobs-daemon
// --hubble-server ADDR` read it as they would read Hubble.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/isoobs/isoobs/testlab/hubblereplay"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "hubble-replay:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		listen, node string
		maxFlows     int
		afterFollow  bool
	)
	cmd := &cobra.Command{
		Use:   "hubble-replay [flags] EXPORT.json...",
		Short: "Serve Hubble JSON export files over the real Hubble observer API",
		Example: `  hubble observe -o json --last 1000 > flows.json      # on a real cluster
  hubble-replay --listen unix:///tmp/hubble.sock flows.json
  hubble observe --server unix:///tmp/hubble.sock --all
  isoobs-daemon --hubble-server unix:///tmp/hubble.sock`,
		Args:          cobra.MinimumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, files []string) error {
			srv := hubblereplay.NewServer(hubblereplay.Options{NodeName: node, MaxFlows: maxFlows, Address: listen})
			var events int
			var publish []func()
			for _, f := range files {
				fh, err := os.Open(f)
				if err != nil {
					return err
				}
				evs, st, err := hubblereplay.ReadExport(fh)
				fh.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
				for _, e := range st.Errors {
					fmt.Fprintf(os.Stderr, "%s: skipped %s\n", f, e)
				}
				if st.Events == 0 {
					return fmt.Errorf("%s: no flows in it (%d lines, %d skipped); write it with `hubble observe -o json`", f, st.Lines, st.Skipped)
				}
				events += st.Events
				publish = append(publish, func() { srv.Publish(evs...) })
			}
			lis, err := listenOn(listen)
			if err != nil {
				return err
			}
			gs := grpc.NewServer()
			srv.Register(gs)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go func() { <-ctx.Done(); gs.Stop() }()
			go func() {
				if afterFollow {
					// Followers (the daemon) start at the end of the buffer, as with Hubble: hold
					// the flows until one follows, so it receives them.
					for ctx.Err() == nil {
						if _, following := srv.Streams(); following > 0 {
							break
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
				for _, p := range publish {
					p()
				}
				fmt.Fprintf(os.Stderr, "hubble-replay: published %d events\n", events)
			}()
			fmt.Fprintf(os.Stderr, "hubble-replay: serving %d events from %d files on %s\n", events, len(files), listen)
			if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "unix:///tmp/hubble-hubblereplay.sock", "where to serve: unix:///path or host:port")
	f.StringVar(&node, "node", "replay-node", "node name reported for events without one")
	f.IntVar(&maxFlows, "max-flows", 65535, "ring buffer capacity (Hubble's --hubble-event-buffer-capacity)")
	f.BoolVar(&afterFollow, "after-follow", false, "publish only once a client follows (so `isoobs-daemon` and `hubble observe -f` receive every flow)")
	return cmd
}

func listenOn(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		_ = os.Remove(path)
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", strings.TrimPrefix(addr, "tcp://"))
}
