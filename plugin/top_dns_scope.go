package plugin

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/isoobs/isoobs/plugin/top"
)

// maxNameRegex is the daemons' bound on --name (daemon/names.go).
const maxNameRegex = 512

// validateScope checks --name, --zone and --since alone and together, before any daemon is
// asked: a bad expression is said here, in the words of the flags.
func (o *TopDNSOptions) validateScope() error {
	if o.NameRegex != "" {
		if len(o.NameRegex) > maxNameRegex {
			return fmt.Errorf("--name is %d bytes; the daemons accept at most %d", len(o.NameRegex), maxNameRegex)
		}
		if _, err := regexp.Compile("(?i)" + o.NameRegex); err != nil {
			return fmt.Errorf("invalid --name %q: %v (an RE2 expression, e.g. --name '^api\\.' or --name 'crawl'; look-arounds and backreferences are not RE2)", o.NameRegex, err)
		}
	}
	if o.Zone != "" {
		z := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(o.Zone), "*."), ".")
		if z == "" || len(z) > 253 || strings.Contains(z, "..") || strings.HasPrefix(z, ".") {
			return fmt.Errorf("invalid --zone %q: give a domain such as example.com (every name under it is kept)", o.Zone)
		}
	}
	if o.Once && (o.NameRegex != "" || o.Zone != "") {
		return errors.New("--once with --name/--zone would print one interval: a name filter counts from when the view starts; use --duration 10s to count matching names over the next 10 seconds")
	}
	if o.Since == 0 {
		return nil
	}
	switch {
	case o.Since < 0:
		return fmt.Errorf("--since %s is negative: give how far to look back, e.g. --since 5m", o.Since)
	case o.Since < time.Second:
		return fmt.Errorf("--since %s is too short: look back 1s or more, e.g. --since 1m", o.Since)
	case o.Duration > 0:
		return errors.New("--since and --duration conflict: --since 5m shows the last 5 minutes from the daemons' history, --duration 10s counts the next 10 seconds; use one")
	case o.NameRegex != "" || o.Zone != "":
		return errors.New("--since cannot be combined with --name/--zone: the daemons' history keeps per-pod counts, not per-name counts (a name filter counts from when the view starts)")
	case o.GroupBy == top.GroupByQName:
		return errors.New("--since cannot group by qname: the daemons' history keeps per-pod counts, not per-name counts; use --group-by pod, workload, namespace or node")
	}
	return nil
}

// validateServer refuses --group-by server and --server where rows carry no servers: the
// history (--since) and the per-name counts (--name/--zone, --group-by qname) are not kept
// per server.
func (o *TopDNSOptions) validateServer() error {
	if o.GroupBy != top.GroupByServer && o.Server == "" {
		return nil
	}
	what := "--group-by server"
	if o.Server != "" {
		what = "--server " + o.Server
	}
	switch {
	case o.Since > 0:
		return fmt.Errorf("%s cannot be combined with --since: the daemons' history keeps per-pod counts, not per-server counts; drop --since to count from the daemons' start", what)
	case o.NameRegex != "" || o.Zone != "":
		return fmt.Errorf("%s cannot be combined with --name/--zone: the daemons count servers per pod, not per name; drop the name filter", what)
	case o.GroupBy == top.GroupByQName:
		return fmt.Errorf("%s cannot group by qname: servers are counted per pod, not per name; use --group-by pod, workload, namespace, node or server", what)
	}
	return nil
}
