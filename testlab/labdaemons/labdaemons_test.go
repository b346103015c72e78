//go:build linux

package labdaemons

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab"
)

// The lab's daemons run with a token of the chart's ServiceAccount, not the admin kubeconfig,
// and that is enough: each daemon's pod watch is connected (Status, /readyz through Start's
// wait) with exactly the chart's RBAC, which cannot list namespaces or read Secrets.
func TestDaemonsRunWithTheChartsServiceAccount(t *testing.T) {
	lab := testlab.StartForTest(t, testlab.Options{NoCoreDNS: true, Nodes: []string{"ld-a"}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "isoobs-daemon")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/isoobs/isoobs/cmd/isoobs-daemon").CombinedOutput(); err != nil {
		t.Fatalf("go build isoobs-daemon: %v\n%s", err, out)
	}
	set, err := Start(ctx, lab, Options{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)

	if set.Kubeconfig == lab.Kubeconfig() || set.ServiceAccount != "isoobs/isoobs" {
		t.Fatalf("daemons' credential %s (%s), want a token of isoobs/isoobs", set.Kubeconfig, set.ServiceAccount)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", set.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(rc)
	who, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u := who.Status.UserInfo.Username; u != "system:serviceaccount:isoobs:isoobs" {
		t.Errorf("the daemons authenticate as %q", u)
	}
	for _, ra := range []authorizationv1.ResourceAttributes{
		{Verb: "list", Resource: "namespaces"}, {Verb: "list", Resource: "secrets"}, {Verb: "create", Resource: "pods/portforward"},
	} {
		sar, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed {
			t.Errorf("the daemons' account may %s %s: more than the chart's pods-only ClusterRole", ra.Verb, ra.Resource)
		}
	}

	// In-process daemons get the same account.
	inproc, err := ChartServiceAccountConfig(ctx, lab)
	if err != nil {
		t.Fatal(err)
	}
	who2, err := kubernetes.NewForConfigOrDie(inproc).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil || who2.Status.UserInfo.Username != "system:serviceaccount:isoobs:isoobs" {
		t.Errorf("ChartServiceAccountConfig authenticates as %v (%v)", who2, err)
	}

	for node, d := range set.ByNode {
		i := slices.Index(d.Cmd.Args, "--kubeconfig")
		if i < 0 || d.Cmd.Args[i+1] != set.Kubeconfig {
			t.Errorf("%s: daemon args %v lack --kubeconfig %s", node, d.Cmd.Args, set.Kubeconfig)
		}
		conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(d.Port), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		testlab.WaitFor(t, 30*time.Second, func() error {
			st, err := isoobsv1.NewDaemonClient(conn).Status(ctx, &isoobsv1.StatusRequest{})
			if err != nil {
				return err
			}
			if !st.KubernetesConnected {
				return errorString(node + ": not connected to Kubernetes: " + st.KubernetesError)
			}
			return nil
		})
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
