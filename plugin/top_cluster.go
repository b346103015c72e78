package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"

	"github.com/isoobs/isoobs/plugin/cluster"
	"github.com/isoobs/isoobs/plugin/top"
)

// defaultClusterOptions are the cluster flags' defaults: the chart's namespace, labels and port.
func defaultClusterOptions() cluster.Options {
	return cluster.Options{Namespace: cluster.DefaultNamespace, Selector: cluster.DefaultSelector,
		Port: cluster.DefaultPort, ConnectTimeout: cluster.DefaultConnectTimeout}
}

// addClusterFlags adds the flags that find and reach the daemon pods (top dns, status), with
// o's values as defaults.
func addClusterFlags(f *pflag.FlagSet, o *cluster.Options) {
	f.StringSliceVar(&o.Nodes, "node", o.Nodes, "Only these nodes' daemons (repeat or comma-separate)")
	f.StringVar(&o.Namespace, "daemon-namespace", o.Namespace, "Namespace of the isoobs daemon pods")
	f.StringVar(&o.Selector, "daemon-selector", o.Selector, "Label selector of the isoobs daemon pods")
	f.IntVar(&o.Port, "daemon-port", o.Port, "The daemons' gRPC port inside their pods (a container port named \"grpc\" wins)")
	f.DurationVar(&o.ConnectTimeout, "connect-timeout", o.ConnectTimeout, "How long each node's daemon gets to answer before it is reported missing")
	f.StringVar(&o.TokenFile, "token-file", o.TokenFile, "A token for audience "+cluster.TenantAudience+", sent to every daemon: required where the daemons run with tenant authorization (kubectl create token SERVICEACCOUNT -n NAMESPACE --audience "+cluster.TenantAudience+" > FILE)")
}

// validateClusterFlags checks the cluster-mode flags; clusterMode is false
// when --daemon or --local choose the daemons instead.
func validateClusterFlags(clusterMode bool, o cluster.Options) error {
	nodes, selector, port, timeout := o.Nodes, o.Selector, o.Port, o.ConnectTimeout
	if !clusterMode && len(nodes) > 0 {
		return errors.New("--node picks daemon pods in cluster mode; with --daemon or --local the daemons are given: drop --node (use --pod or -l to narrow rows)")
	}
	for _, n := range nodes {
		if strings.TrimSpace(n) == "" {
			return errors.New("--node has an empty name: pass node names as shown by `kubectl get nodes`")
		}
	}
	if _, err := labels.Parse(selector); err != nil {
		return fmt.Errorf("invalid --daemon-selector %q: %v (example: --daemon-selector app.kubernetes.io/name=isoobs)", selector, err)
	}
	if port <= 0 || port > 65535 {
		return fmt.Errorf("--daemon-port %d is not a port: use 1-65535 (the chart's default is %d)", port, cluster.DefaultPort)
	}
	if timeout <= 0 {
		return fmt.Errorf("--connect-timeout %s must be positive, e.g. --connect-timeout 5s", timeout)
	}
	return nil
}

// connectCluster finds the daemon pods and connects to each through the API
// server's port-forward. Nodes that cannot be reached are returned as
// missing; an error means no daemon at all can be read.
func connectCluster(ctx context.Context, configFlags *genericclioptions.ConfigFlags, opts cluster.Options) (cluster.Conns, []top.MissingNode, error) {
	if configFlags == nil {
		return nil, nil, errors.New("no kubeconfig flags: cluster mode needs a Kubernetes client configuration")
	}
	config, err := configFlags.ToRESTConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("cluster mode needs a kubeconfig: %w (or read one daemon with --daemon ADDR)", err)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, nil, err
	}
	pods, missing, err := cluster.Discover(ctx, client, opts)
	if err != nil {
		return nil, nil, err
	}
	if err := cluster.CheckAccess(ctx, client, opts.Namespace); err != nil {
		return nil, nil, err
	}
	dialer, err := cluster.NewPortForwardDialer(config)
	if err != nil {
		return nil, nil, err
	}
	conns, unreachable, err := cluster.Connect(ctx, pods, dialer.Dial, opts)
	if err != nil {
		return nil, nil, err
	}
	missing = append(missing, unreachable...)
	if len(conns) == 0 {
		reasons := make([]string, len(missing))
		for i, m := range missing {
			reasons[i] = m.Node + ": " + m.Reason
		}
		return nil, missing, fmt.Errorf("no isoobs daemon answered:\n  %s", strings.Join(reasons, "\n  "))
	}
	return conns, missing, nil
}

// clusterSources is connectCluster for `top`: one source per reachable node.
func clusterSources(ctx context.Context, configFlags *genericclioptions.ConfigFlags, opts cluster.Options, _ io.Writer) ([]top.Source, []top.MissingNode, func(), error) {
	conns, missing, err := connectCluster(ctx, configFlags, opts)
	if err != nil {
		return nil, missing, nil, err
	}
	return conns.Sources(), missing, conns.Close, nil
}
