package verify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/isoobs/isoobs/k8s"
	observerpb "github.com/isoobs/isoobs/proto/observer/observer"
	relaypb "github.com/isoobs/isoobs/proto/observer/relay"
)

// observerServiceName is what `hubble status` health-checks.
const observerServiceName = "observer.Observer"

// RelayStatus is what `hubble status` prints, plus node names.
type RelayStatus struct {
	Via              string
	NumFlows         uint64
	MaxFlows         uint64
	FlowsPerSecond   float64
	Connected        uint32
	Unavailable      uint32
	UnavailableNodes []string
	ConnectedNodes   []string
	Version          string
	// Fallback says why the port-forward was not used ("" when it was).
	Fallback string
}

// Summary formats the status the way `hubble status` (compact) does.
func (s RelayStatus) Summary() string {
	ratio := ""
	if s.MaxFlows > 0 {
		ratio = fmt.Sprintf(" (%.2f%%)", float64(s.NumFlows)/float64(s.MaxFlows)*100)
	}
	return fmt.Sprintf("Current/Max Flows: %s/%s%s, Flows/s: %.2f, Connected Nodes: %d/%d",
		groupDigits(s.NumFlows), groupDigits(s.MaxFlows), ratio, s.FlowsPerSecond, s.Connected, s.Connected+s.Unavailable)
}

func groupDigits(n uint64) string {
	s := strconv.FormatUint(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func checkRelay(ctx context.Context, e *env) Result {
	r, d := deploymentResult(ctx, e, e.Namespaces.Cilium, LabelHubbleRelay, "hubble-relay", true)
	if r.Status == StatusFail || d == nil {
		return r
	}
	pods, err := e.pods(ctx, e.Namespaces.Cilium, LabelHubbleRelay)
	if err != nil {
		return apiErr("listing relay pods", err)
	}
	var pod *corev1.Pod
	for i := range pods {
		if k8s.PodReady(&pods[i]) {
			pod = &pods[i]
			break
		}
	}
	if pod == nil && e.RelayAddress == "" {
		return Result{Status: StatusFail, Detail: r.Detail + "; no Ready relay pod",
			Next: fmt.Sprintf("kubectl -n %s get pods -l %s", e.Namespaces.Cilium, LabelHubbleRelay)}
	}
	st, err := e.relayStatus(ctx, pod)
	if err != nil {
		return Result{Status: StatusFail, Detail: "relay pods ready, but ServerStatus failed: " + err.Error(),
			Next: fmt.Sprintf("kubectl -n %s logs deploy/%s; cilium hubble port-forward & hubble status", e.Namespaces.Cilium, d.Name)}
	}
	detail := fmt.Sprintf("%d/%d ready; %s (via %s)", d.Status.ReadyReplicas, d.Status.ReadyReplicas, st.Summary(), st.Via)
	var items []string
	if len(st.ConnectedNodes) > 0 {
		items = append(items, "connected: "+strings.Join(st.ConnectedNodes, ", "))
	}
	if st.Fallback != "" {
		items = append(items, "reached Relay at its pod IP because "+st.Fallback)
	}
	if st.Unavailable > 0 {
		names := st.UnavailableNodes
		if len(names) == 0 {
			names = []string{fmt.Sprintf("%d unnamed", st.Unavailable)}
		}
		items = append(items, "unavailable: "+strings.Join(names, ", "))
		next := fmt.Sprintf("kubectl -n %s logs deploy/%s | grep -i %s", e.Namespaces.Cilium, d.Name, names[0])
		if len(st.UnavailableNodes) > 0 {
			next = fmt.Sprintf("kubectl -n %s get pods -l %s -o wide --field-selector spec.nodeName=%s  # is cilium running and its hubble server (:4244) reachable there? then: kubectl -n %s logs deploy/%s",
				e.Namespaces.Cilium, LabelCiliumAgent, names[0], e.Namespaces.Cilium, d.Name)
		}
		return Result{Status: StatusFail, Detail: fmt.Sprintf("%d node(s) unavailable; %s", st.Unavailable, st.Summary()), Items: items, Next: next}
	}
	if st.Connected == 0 {
		return Result{Status: StatusFail, Detail: "relay reports no connected nodes; " + st.Summary(), Items: items,
			Next: fmt.Sprintf("kubectl -n %s get svc,ep hubble-peer; kubectl -n %s logs deploy/%s", e.Namespaces.Cilium, e.Namespaces.Cilium, d.Name)}
	}
	if r.Status == StatusWarn {
		return Result{Status: StatusWarn, Detail: detail, Items: items, Next: r.Next}
	}
	return Result{Status: StatusOK, Detail: detail, Items: items}
}

// relayStatus asks Relay for its health and ServerStatus (and node names).
// Paths, in order: --relay-address; a port-forward to the relay pod through
// the API server (works from anywhere kubectl works); the pod IP directly
// (works in-cluster and where pod IPs are routed, e.g. the isoobs lab, whose
// emulated kubelet has no port-forward target for the relay).
func (e *env) relayStatus(ctx context.Context, pod *corev1.Pod) (RelayStatus, error) {
	creds, note := e.relayCredentials(ctx)
	if e.RelayAddress != "" {
		return queryRelay(ctx, e.RelayAddress, "passthrough:///"+e.RelayAddress, creds, nil, "--relay-address "+e.RelayAddress+note)
	}
	port := relayPort(pod)
	var errs []string
	budget := time.Until(deadlineOr(ctx, time.Now().Add(5*time.Second)))
	pfCtx, cancel := context.WithTimeout(ctx, budget/2)
	st, err := queryRelay(pfCtx, pod.Name, "passthrough:///"+pod.Name, creds, func(ctx context.Context, _ string) (net.Conn, error) {
		if e.Config == nil {
			return nil, errors.New("no REST config for a port-forward")
		}
		d, err := k8s.NewPortForwardDialer(e.Config)
		if err != nil {
			return nil, err
		}
		return d.Dial(ctx, k8s.PodPort{Namespace: pod.Namespace, Name: pod.Name, Port: port})
	}, "port-forward "+pod.Name+":"+strconv.Itoa(port)+note)
	cancel()
	if err == nil {
		return st, nil
	}
	errs = append(errs, "port-forward: "+err.Error())
	if ip, perr := netip.ParseAddr(pod.Status.PodIP); perr == nil {
		addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
		st, err := queryRelay(ctx, addr, "passthrough:///"+addr, creds, nil, "pod IP "+addr+note)
		if err == nil {
			st.Fallback = errs[0]
			return st, nil
		}
		errs = append(errs, "pod IP "+addr+": "+err.Error())
	}
	return RelayStatus{}, errors.New(strings.Join(errs, "; "))
}

func deadlineOr(ctx context.Context, def time.Time) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return def
}

func relayPort(pod *corev1.Pod) int {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "grpc" {
				return int(p.ContainerPort)
			}
		}
	}
	return PortRelay
}

// relayCredentials: Relay serves TLS when its config names a server
// certificate (hubble.relay.tls.server.enabled). The certificate is signed
// by the cilium-ca Secret's CA for *.hubble-relay.cilium.io.
func (e *env) relayCredentials(ctx context.Context) (credentials.TransportCredentials, string) {
	cm, err := e.Client.CoreV1().ConfigMaps(e.Namespaces.Cilium).Get(ctx, "hubble-relay-config", metav1.GetOptions{})
	if err != nil {
		return insecure.NewCredentials(), ""
	}
	var cfg map[string]any
	if yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg) != nil || cfg["tls-relay-server-cert-file"] == nil {
		return insecure.NewCredentials(), ""
	}
	tc := &tls.Config{ServerName: "ui.hubble-relay.cilium.io", MinVersion: tls.VersionTLS12}
	if sec, err := e.Client.CoreV1().Secrets(e.Namespaces.Cilium).Get(ctx, "cilium-ca", metav1.GetOptions{}); err == nil {
		pool := x509.NewCertPool()
		if pool.AppendCertsFromPEM(sec.Data["ca.crt"]) {
			tc.RootCAs = pool
			return credentials.NewTLS(tc), ", TLS"
		}
	}
	tc.InsecureSkipVerify = true // cannot read the CA; still check that Relay answers
	return credentials.NewTLS(tc), ", TLS unverified: cannot read secret cilium-ca"
}

func queryRelay(ctx context.Context, name, target string, creds credentials.TransportCredentials,
	dial func(context.Context, string) (net.Conn, error), via string) (RelayStatus, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if dial != nil {
		opts = append(opts, grpc.WithContextDialer(dial))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return RelayStatus{}, err
	}
	defer conn.Close()
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: observerServiceName})
	if err != nil {
		return RelayStatus{}, fmt.Errorf("health check: %w", err)
	}
	if hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return RelayStatus{}, fmt.Errorf("health check: %s is %s", observerServiceName, hc.GetStatus())
	}
	client := observerpb.NewObserverClient(conn)
	ss, err := client.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	if err != nil {
		return RelayStatus{}, fmt.Errorf("ServerStatus: %w", err)
	}
	st := RelayStatus{
		Via:              via,
		NumFlows:         ss.GetNumFlows(),
		MaxFlows:         ss.GetMaxFlows(),
		FlowsPerSecond:   ss.GetFlowsRate(),
		Connected:        ss.GetNumConnectedNodes().GetValue(),
		Unavailable:      ss.GetNumUnavailableNodes().GetValue(),
		UnavailableNodes: ss.GetUnavailableNodes(),
		Version:          ss.GetVersion(),
	}
	// hubble status: flows_rate when the server fills it, else seen/uptime.
	if st.FlowsPerSecond == 0 && ss.GetUptimeNs() > 0 {
		st.FlowsPerSecond = float64(ss.GetSeenFlows()) / time.Duration(ss.GetUptimeNs()).Seconds()
	}
	// GetNodes names the connected nodes too (ServerStatus only names the
	// unavailable ones). Older relays may not implement it: not an error.
	if nodes, err := client.GetNodes(ctx, &observerpb.GetNodesRequest{}); err == nil {
		for _, n := range nodes.GetNodes() {
			if n.GetState() == relaypb.NodeState_NODE_CONNECTED {
				st.ConnectedNodes = append(st.ConnectedNodes, n.GetName())
			}
		}
	}
	return st, nil
}
