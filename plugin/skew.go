package plugin

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/isoobs/isoobs/buildinfo"
	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// versionSkewHelp is the help text's sentence on the version check (status and top dns).
const versionSkewHelp = `A warning on stderr names the nodes whose daemon runs another version than
this plugin, and how to upgrade. Development builds (version "(devel)") and
daemons that report no version are not compared.`

// NodeVersion is the version one node's daemon reports in its Status.
type NodeVersion struct {
	Node, Version string
}

// maxSkewNodes bounds the node names one warning lists (clusters have hundreds).
const maxSkewNodes = 5

// comparableVersion says whether v names a build that can be compared: not an unstamped
// development build ("(devel)"), not a daemon from before buildinfo ("dev"), not unknown.
func comparableVersion(v string) bool {
	return v != "" && v != "(devel)" && v != "dev"
}

// versionSkewWarning returns one line naming the daemons whose version differs from the
// plugin's, grouped by version, and what to run; "" when they agree or cannot be compared.
func versionSkewWarning(plugin string, daemons []NodeVersion) string {
	if !comparableVersion(plugin) {
		return ""
	}
	byVersion := map[string][]string{}
	for _, d := range daemons {
		if comparableVersion(d.Version) && d.Version != plugin {
			byVersion[d.Version] = append(byVersion[d.Version], d.Node)
		}
	}
	if len(byVersion) == 0 {
		return ""
	}
	versions := make([]string, 0, len(byVersion))
	for v := range byVersion {
		versions = append(versions, v)
	}
	sort.Strings(versions)
	groups := make([]string, len(versions))
	for i, v := range versions {
		nodes := byVersion[v]
		sort.Strings(nodes)
		list := strings.Join(nodes[:min(len(nodes), maxSkewNodes)], ", ")
		if len(nodes) > maxSkewNodes {
			list += fmt.Sprintf(" and %d more", len(nodes)-maxSkewNodes)
		}
		groups[i] = v + " on " + list
	}
	return fmt.Sprintf("version skew: kubectl-isoobs is %s but the isoobs daemon is %s: run `kubectl isoobs install` to upgrade the daemons to %s, or `kubectl krew upgrade isoobs` if the plugin is the older one",
		plugin, strings.Join(groups, "; "), plugin)
}

// statusVersionSkew is the warning for `status`: its rows already carry each daemon's version.
func statusVersionSkew(report StatusReport) string {
	daemons := make([]NodeVersion, 0, len(report.Daemons))
	for _, d := range report.Daemons {
		if d.Error == "" {
			daemons = append(daemons, NodeVersion{Node: d.Node, Version: d.Version})
		}
	}
	return versionSkewWarning(buildinfo.Get().Version, daemons)
}

// maxSkewWait bounds how long `top` waits for the daemons' Status before its first frame; a
// daemon that does not answer in time is left out of the check (its stream reports it).
const maxSkewWait = 2 * time.Second

// sourcesVersionSkew asks every source's daemon for its Status (one RPC each on the open
// connection, concurrently) and returns the skew warning. Top frames carry no version, so this
// is done once at connect time. A development build of the plugin asks nothing.
func sourcesVersionSkew(ctx context.Context, sources []top.Source, timeout time.Duration) string {
	plugin := buildinfo.Get().Version
	if !comparableVersion(plugin) || len(sources) == 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, min(timeout, maxSkewWait))
	defer cancel()
	daemons := make([]NodeVersion, len(sources))
	sem := make(chan struct{}, cluster.DefaultConcurrency)
	var wg sync.WaitGroup
	for i, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			resp, err := src.Client.Status(ctx, &isoobsv1.StatusRequest{})
			if err != nil {
				return
			}
			node := resp.GetNode()
			if node == "" {
				node = src.Name
			}
			daemons[i] = NodeVersion{Node: node, Version: resp.GetVersion()}
		}()
	}
	wg.Wait()
	return versionSkewWarning(plugin, daemons)
}
