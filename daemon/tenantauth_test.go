package daemon

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isoobs/isoobs/plugin/cluster"
	plugintop "github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab/controlplane"
)

// Item 12, the part the lab proves: with TenantAuthorization a port-forward (TCP) caller is
// known only through a token the API server vouches for with the daemon's audience, and reads
// only a namespace RBAC grants it (get dnsflows.isoobs.io). The node's unix socket is not asked.
func TestTenantAuthorization(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	cs := cp.Client()
	for _, ns := range []string{"tenant-a", "tenant-b"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().ServiceAccounts("tenant-a").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "alice"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "isoobs-dns", Namespace: "tenant-a"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{TenantGroup}, Resources: []string{TenantResource}, Verbs: []string{"get"}}}}
	if _, err := cs.RbacV1().Roles("tenant-a").Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-dns", Namespace: "tenant-a"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "isoobs-dns"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "alice", Namespace: "tenant-a"}}}
	if _, err := cs.RbacV1().RoleBindings("tenant-a").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := func(audiences ...string) string {
		tr, err := cs.CoreV1().ServiceAccounts("tenant-a").CreateToken(ctx, "alice", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	daemonToken, apiToken := token(TenantAudience), token()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sock := filepath.Join(t.TempDir(), "d.sock")
	d := testDaemon(t, func(c *Config) {
		c.RESTConfig, c.TenantAuthorization = cp.RESTConfig(), true
		c.GRPCListen, c.Interval = []string{addr, "unix://" + sock}, 100*time.Millisecond
	})
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(rctx) }()
	defer func() { rcancel(); <-done }()

	dial := func(target string) isoobsv1.DaemonClient {
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return isoobsv1.NewDaemonClient(conn)
	}
	tcp, unix := dial("passthrough:///"+addr), dial("unix://"+sock)
	with := func(tok string) context.Context {
		if tok == "" {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	// first frame of a Top stream, or the stream's error
	top := func(c isoobsv1.DaemonClient, tok string, req *isoobsv1.TopRequest) (*isoobsv1.TopFrame, error) {
		sctx, scancel := context.WithTimeout(with(tok), 20*time.Second)
		defer scancel()
		st, err := c.Top(sctx, req)
		if err != nil {
			return nil, err
		}
		return st.Recv()
	}
	var lastErr error
	for i := 0; i < 100; i++ { // the listeners come up with Run
		if _, lastErr = unix.Status(ctx, &isoobsv1.StatusRequest{}); lastErr == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lastErr != nil {
		t.Fatalf("unix socket, no token: Status: %v", lastErr)
	}

	for _, tc := range []struct {
		name string
		tok  string
		req  *isoobsv1.TopRequest
		want codes.Code
		msg  string
	}{
		{"no token", "", &isoobsv1.TopRequest{Namespace: "tenant-a"}, codes.Unauthenticated, "audience " + TenantAudience},
		{"a token for the API server", apiToken, &isoobsv1.TopRequest{Namespace: "tenant-a"}, codes.Unauthenticated, "not accepted"},
		{"garbage token", "x.y.z", &isoobsv1.TopRequest{Namespace: "tenant-a"}, codes.Unauthenticated, "not accepted"},
		{"another tenant's namespace", daemonToken, &isoobsv1.TopRequest{Namespace: "tenant-b"}, codes.PermissionDenied, "system:serviceaccount:tenant-a:alice may not get dnsflows.isoobs.io in namespace tenant-b"},
		{"all namespaces", daemonToken, &isoobsv1.TopRequest{}, codes.PermissionDenied, "name one namespace"},
		{"group by qname", daemonToken, &isoobsv1.TopRequest{Namespace: "tenant-a", GroupBy: isoobsv1.GroupBy_GROUP_BY_QNAME}, codes.PermissionDenied, "mixes namespaces"},
	} {
		_, err := top(tcp, tc.tok, tc.req)
		if status.Code(err) != tc.want || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %v …%s…", tc.name, err, tc.want, tc.msg)
		}
	}
	if _, err := tcp.Status(ctx, &isoobsv1.StatusRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Status without a token over TCP: %v, want Unauthenticated", err)
	}
	if _, err := tcp.Status(with(daemonToken), &isoobsv1.StatusRequest{}); err != nil {
		t.Errorf("Status with a vouched-for token: %v", err)
	}
	f, err := top(tcp, daemonToken, &isoobsv1.TopRequest{Namespace: "tenant-a"})
	if err != nil {
		t.Fatalf("own namespace: %v", err)
	}
	for _, r := range f.Rows {
		if r.Namespace != "tenant-a" {
			t.Errorf("row of namespace %q in tenant-a's frame", r.Namespace)
		}
	}
	if len(f.TopNames) != 0 || !strings.Contains(strings.Join(f.Warnings, ";"), "limited to namespace tenant-a") {
		t.Errorf("tenant frame: top names %v, warnings %v", f.TopNames, f.Warnings)
	}
	if _, err := top(unix, "", &isoobsv1.TopRequest{}); err != nil {
		t.Errorf("unix socket, all namespaces, no token: %v", err)
	}

	// The plugin's side: --token-file's token through its dial options.
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(daemonToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := cluster.Options{TokenFile: tokenFile}.DialOptions()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := plugintop.DialDaemon(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := top(isoobsv1.NewDaemonClient(conn), "", &isoobsv1.TopRequest{Namespace: "tenant-a"}); err != nil {
		t.Errorf("the plugin's --token-file, own namespace: %v", err)
	}
}

func TestLimitFrame(t *testing.T) {
	f := &isoobsv1.TopFrame{
		Rows:     []*isoobsv1.DNSRow{{Namespace: "tenant-a", Pod: "a"}, {Namespace: "tenant-b", Pod: "b"}, {Namespace: "", Pod: "host"}},
		TopNames: []*isoobsv1.NameCount{{Name: "secret.tenant-b.example"}},
		Total:    &isoobsv1.DNSRow{TopNames: []*isoobsv1.NameCount{{Name: "x"}}, TopZones: []*isoobsv1.NameCount{{Name: "y"}}},
	}
	f = limitFrame(f, "tenant-a")
	if len(f.Rows) != 1 || f.Rows[0].Pod != "a" || f.TopNames != nil || f.Total.TopNames != nil || f.Total.TopZones != nil {
		t.Errorf("limited frame: %v", f)
	}
}
