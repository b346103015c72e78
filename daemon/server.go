package daemon

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// Tenant authorization (Config.TenantAuthorization; design in docs/security.md).
const (
	// TenantAudience is the audience a caller's token must be issued for
	// (kubectl create token SA --audience isoobs.io/daemon). The API server itself refuses such a
	// token, so what reaches the daemon cannot be replayed against the cluster.
	TenantAudience = "isoobs.io/daemon"
	// TenantGroup and TenantResource are what a SubjectAccessReview asks for, verb get, in the
	// requested namespace: a virtual resource that RBAC grants with a Role, no CRD needed.
	TenantGroup    = "isoobs.io"
	TenantResource = "dnsflows"
)

type tenantAuth struct {
	cs    kubernetes.Interface
	mu    sync.Mutex
	cache map[[32]byte]reviewed // by token hash, 30 s
}

type reviewed struct {
	user *authenticationv1.UserInfo
	at   time.Time
}

func newTenantAuth(rc *rest.Config) (*tenantAuth, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &tenantAuth{cs: cs, cache: map[[32]byte]reviewed{}}, nil
}

// identify returns the caller the API server vouches for, or nil for a unix-socket caller
// (root on the node, mode 0600 socket).
func (a *tenantAuth) identify(ctx context.Context) (*authenticationv1.UserInfo, error) {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil && p.Addr.Network() == "unix" {
		return nil, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			token = strings.TrimSpace(t)
		}
	}
	if token == "" {
		return nil, status.Error(codes.Unauthenticated, "this daemon runs with tenant authorization: send a bearer token for audience "+TenantAudience+" (kubectl isoobs ... --token-file FILE, FILE made by: kubectl create token SERVICEACCOUNT -n NAMESPACE --audience "+TenantAudience+")")
	}
	key := sha256.Sum256([]byte(token))
	a.mu.Lock()
	if r, ok := a.cache[key]; ok && time.Since(r.at) < 30*time.Second {
		a.mu.Unlock()
		return r.user, nil
	}
	a.mu.Unlock()
	tr, err := a.cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{TenantAudience}}}, metav1.CreateOptions{})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "TokenReview: %v", err)
	}
	if !tr.Status.Authenticated || !slices.Contains(tr.Status.Audiences, TenantAudience) {
		return nil, status.Errorf(codes.Unauthenticated, "token not accepted for audience %s: %s", TenantAudience, tr.Status.Error)
	}
	user := tr.Status.User
	a.mu.Lock()
	for k, r := range a.cache {
		if time.Since(r.at) >= 30*time.Second {
			delete(a.cache, k)
		}
	}
	a.cache[key] = reviewed{user: &user, at: time.Now()}
	a.mu.Unlock()
	return &user, nil
}

// allow asks the API server whether user may get dnsflows.isoobs.io in namespace ns.
func (a *tenantAuth) allow(ctx context.Context, user *authenticationv1.UserInfo, ns string) error {
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := a.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{User: user.Username, Groups: user.Groups, UID: user.UID, Extra: extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Group: TenantGroup, Resource: TenantResource}}},
		metav1.CreateOptions{})
	if err != nil {
		return status.Errorf(codes.Unavailable, "SubjectAccessReview: %v", err)
	}
	if !sar.Status.Allowed {
		return status.Errorf(codes.PermissionDenied, "%s may not get %s.%s in namespace %s", user.Username, TenantResource, TenantGroup, ns)
	}
	return nil
}

// unary authenticates Status (it carries no names, so any vouched-for caller may read it).
func (a *tenantAuth) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if _, err := a.identify(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// authorizeTop returns the one namespace a tenant's Top stream is limited to ("" when the caller
// is not limited: unix socket, or no tenant authorization).
func (s *server) authorizeTop(ctx context.Context, req *isoobsv1.TopRequest) (string, error) {
	a := s.d.auth
	if a == nil {
		return "", nil
	}
	user, err := a.identify(ctx)
	if err != nil || user == nil {
		return "", err
	}
	if req.Namespace == "" {
		return "", status.Error(codes.PermissionDenied, "this daemon runs with tenant authorization: name one namespace (-n NAMESPACE); all namespaces (-A) is for the node's unix socket")
	}
	switch req.GroupBy {
	case isoobsv1.GroupBy_GROUP_BY_UNSPECIFIED, isoobsv1.GroupBy_GROUP_BY_POD, isoobsv1.GroupBy_GROUP_BY_WORKLOAD, isoobsv1.GroupBy_GROUP_BY_NAMESPACE:
	default:
		return "", status.Errorf(codes.PermissionDenied, "tenant authorization: --group-by %s mixes namespaces; group by pod, workload or namespace", strings.ToLower(strings.TrimPrefix(req.GroupBy.String(), "GROUP_BY_")))
	}
	if err := a.allow(ctx, user, req.Namespace); err != nil {
		return "", err
	}
	return req.Namespace, nil
}

// limitFrame keeps a tenant's frame to its namespace: other namespaces' rows go, and so do the
// node-wide name lists (they mix namespaces).
func limitFrame(f *isoobsv1.TopFrame, ns string) *isoobsv1.TopFrame {
	rows := f.Rows[:0:0]
	for _, r := range f.Rows {
		if r.Namespace == ns {
			rows = append(rows, r)
		}
	}
	f.Rows, f.TopNames = rows, nil
	if f.Total != nil {
		f.Total.TopNames, f.Total.TopZones = nil, nil
	}
	f.Warnings = append(f.Warnings, fmt.Sprintf("tenant authorization: limited to namespace %s", ns))
	return f
}

type server struct {
	isoobsv1.UnimplementedDaemonServer
	d *Daemon
}

// Top streams one frame every request interval (whole collector ticks), starting with the
// next tick, until the client goes away.
func (s *server) Top(req *isoobsv1.TopRequest, stream isoobsv1.Daemon_TopServer) error {
	limit, err := s.authorizeTop(stream.Context(), req)
	if err != nil {
		return err
	}
	if d := req.GetDimension(); d == isoobsv1.Dimension_DIMENSION_TCP || d == isoobsv1.Dimension_DIMENSION_DROPS {
		return s.topTCP(req, stream, limit)
	}
	if req.GetDimension() == isoobsv1.Dimension_DIMENSION_HTTP {
		return s.topHTTP(req, stream, limit)
	}
	c := s.d.coll
	if err := checkTopBounds(req, c.cfg.Retention); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	q, err := newTopQuery(req, c.cfg.Interval)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	every := frameTicks(req, c.cfg.Interval)
	ticks, ok := c.subscribeAtMost(maxTopStreams)
	if !ok {
		return status.Errorf(codes.ResourceExhausted, "this daemon serves at most %d top streams at once and all are open; close other views of this node, or retry", maxTopStreams)
	}
	defer c.unsubscribe(ticks)
	c.startStream(q)
	if q.sink != nil {
		defer c.removeSink(q.sink)
	}
	n := 0
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-ticks:
		}
		n++
		if n%every != 0 {
			continue
		}
		f := c.frame(q)
		if limit != "" {
			f = limitFrame(f, limit)
		}
		if err := stream.Send(f); err != nil {
			return err
		}
	}
}

// Status describes the daemon, its probes and every loss counter.
func (s *server) Status(context.Context, *isoobsv1.StatusRequest) (*isoobsv1.StatusResponse, error) {
	d := s.d
	resp := &isoobsv1.StatusResponse{
		Node:          d.cfg.NodeName,
		Kernel:        d.kernel,
		Version:       Version,
		CountingSince: timestamppb.New(d.coll.started),
		CgroupRoot:    d.cfg.CgroupRoot,
		Interval:      durationpb.New(d.cfg.Interval),
	}
	for _, a := range d.src.Attachments() {
		ps := &isoobsv1.ProbeStatus{Name: a.Program, Hook: a.Hook, Target: a.Target, Attached: a.Err == nil}
		if a.Err != nil {
			ps.Error = a.Err.Error()
		}
		resp.Probes = append(resp.Probes, ps)
	}
	if d.watcher != nil {
		resp.KubernetesConnected, resp.KubernetesError = d.watcher.Connected()
	} else {
		resp.KubernetesError = "no Kubernetes API configured: rows show pod UIDs and cgroup paths"
	}

	c := d.coll
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := c.stats
	for _, m := range st.Maps() {
		resp.Maps = append(resp.Maps, &isoobsv1.MapStatus{Name: m.Name, Entries: uint64(m.Entries), MaxEntries: uint64(m.Max)})
	}
	resp.Maps = append(resp.Maps, &isoobsv1.MapStatus{Name: "tracked_pods", Entries: uint64(len(c.subjects)), MaxEntries: uint64(c.cfg.MaxTrackedPods)})
	var pods uint32
	for _, sub := range c.subjects {
		if sub.uid != "" {
			pods++
		}
	}
	resp.PodsKnown = pods
	resp.Counters = map[string]uint64{
		"ticks":                       c.tickNo + 1,
		"probe_pod_map_full":          st.PodOverflow,
		"probe_name_table_full":       st.NameOverflow,
		"probe_inflight_inserted":     st.InflightInserted,
		"probe_inflight_duplicates":   st.InflightDuplicates,
		"probe_inflight_matched":      st.InflightMatched,
		"probe_latency_sampled_pods":  uint64(st.LatencySampledPods),
		"probe_inflight_evicted":      st.InflightEvicted,
		"probe_inflight_errors":       st.InflightErrors,
		"probe_unmatched_responses":   st.UnmatchedResponses, // = unsolicited; the older name
		"probe_unsolicited_responses": st.UnmatchedResponses,
		"probe_inflight_expired":      st.InflightExpired,
		"probe_late_answers":          st.LateAnswers,
		"probe_evicted_answers":       st.EvictedAnswers,
		"probe_trace_lost":            st.TraceLost,
		"probe_malformed":             st.Malformed,
		"probe_not_parsed":            st.NotParsed,
		"probe_dns_messages":          st.DNSMessages,
		"host_queries":                c.hostQueries,
		"host_cgroups":                c.hostCgroups,
		"untracked_pods":              c.untrackedPods,
		"untracked_pod_queries":       c.untrackedQueries,
		"unresolved_cgroups":          c.unresolvedCgroups,
		"untracked_name_queries":      c.droppedNameQueries,
		"read_errors":                 c.readErrors,
		"pods_forgotten":              c.subjectsDeleted,
		"kernel_entries_forgotten":    c.kernelEntriesForgot,
		"node_names_evictions":        c.nodeNames.names.Evictions(),
		"cgroups_known":               uint64(len(c.cgroups)),
		"stats_errors":                boolCount(c.statsErr != nil),
	}
	if c.lastTick.IsZero() {
		resp.Counters["ticks"] = 0
	}
	resp.Hubble = d.hubbleStatus()
	d.tcpStatus(resp)
	if c.hub != nil {
		resp.Counters["hubble_untracked_pods"] = c.hub.untrackedPods
		resp.Counters["hubble_untracked_name_queries"] = c.hub.droppedNames
	}
	return resp, nil
}

func boolCount(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
