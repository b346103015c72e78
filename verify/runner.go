package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Components in display order; --component takes these names.
var Components = []string{"cluster", "cilium", "hubble", "tetragon", "dnsproxy", "config", "metrics", "l7", "pipeline", "isoobs"}

func componentRank(c string) int {
	if i := slices.Index(Components, c); i >= 0 {
		return i
	}
	return len(Components)
}

// ParseComponents validates a --component list ("" or nil: all).
func ParseComponents(list []string) ([]string, error) {
	var out []string
	for _, c := range list {
		c = strings.TrimSpace(strings.ToLower(c))
		if c == "" {
			continue
		}
		if !slices.Contains(Components, c) {
			return nil, fmt.Errorf("unknown component %q: use one or more of %s", c, strings.Join(Components, ","))
		}
		out = append(out, c)
	}
	return out, nil
}

// Namespaces where the components live (install's choices, the seeds').
type Namespaces struct {
	Cilium   string // cilium agent, operator, envoy, relay, UI, DNS proxy: kube-system
	Tetragon string // tetragon
	Isoobs   string // isoobs
}

// DefaultNamespaces are where `kubectl isoobs install` puts things.
var DefaultNamespaces = Namespaces{Cilium: "kube-system", Tetragon: "tetragon", Isoobs: "isoobs"}

// Options configure a run.
type Options struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Config is needed for port-forwards (Hubble Relay).
	Config     *rest.Config
	Namespaces Namespaces
	// Edition is "oss", "enterprise" or "" (detected from the cilium image).
	Edition string
	// Components limits the checks (nil: all).
	Components []string
	// CheckTimeout bounds each check (default 5s).
	CheckTimeout time.Duration
	// RelayAddress, when set, is a host:port where Hubble Relay already
	// answers (e.g. a running `cilium hubble port-forward`): no port-forward.
	RelayAddress string
}

// Check is one verification.
type Check struct {
	ID        string
	Component string
	Name      string
	Run       func(ctx context.Context, e *env) Result
}

// Run runs every selected check in parallel, each under CheckTimeout, and
// returns the report. A check that overruns its timeout fails with a result
// saying so; Run itself returns after at most about CheckTimeout.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.Client == nil {
		return nil, errors.New("verify: no Kubernetes client")
	}
	if opts.Namespaces == (Namespaces{}) {
		opts.Namespaces = DefaultNamespaces
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = 5 * time.Second
	}
	start := time.Now()
	e := newEnv(opts)
	var checks []Check
	for _, c := range AllChecks() {
		if len(opts.Components) == 0 || slices.Contains(opts.Components, c.Component) {
			checks = append(checks, c)
		}
	}
	results := make([]Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runOne(ctx, e, c, opts.CheckTimeout)
		}()
	}
	wg.Wait()
	return NewReport(results, time.Since(start)), nil
}

// runOne runs a check and gives up on it at its deadline even if it ignores
// its context (the goroutine is left to finish on its own).
func runOne(ctx context.Context, e *env, c Check, timeout time.Duration) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	done := make(chan Result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- Result{Status: StatusFail, Detail: fmt.Sprintf("check crashed: %v (a bug in isoobs verify: please report it)", p)}
			}
		}()
		done <- c.Run(ctx, e)
	}()
	var r Result
	select {
	case r = <-done:
	case <-ctx.Done():
		r = Result{Status: StatusFail, Detail: fmt.Sprintf("no answer within %s", timeout),
			Next: "kubectl get --raw /readyz?verbose  # is the API server slow? rerun with --check-timeout 15s"}
	}
	r.ID, r.Component, r.Name = c.ID, c.Component, c.Name
	r.DurationMS = time.Since(start).Milliseconds()
	return r
}

// Wait runs the checks every interval until the report is healthy (per
// strict) or ctx ends; progress gets each intermediate report. It returns
// the last report.
func Wait(ctx context.Context, opts Options, strict bool, interval time.Duration, progress func(*Report)) (*Report, error) {
	for {
		// Each attempt runs to its end (every check has its own timeout) so
		// the last report is a real one, not a row of deadline failures.
		rep, err := Run(context.WithoutCancel(ctx), opts)
		if err != nil {
			return nil, err
		}
		if rep.Healthy(strict) {
			return rep, nil
		}
		if progress != nil {
			progress(rep)
		}
		select {
		case <-ctx.Done():
			return rep, nil
		case <-time.After(interval):
		}
	}
}
