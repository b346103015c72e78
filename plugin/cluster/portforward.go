package cluster

import (
	"context"
	"errors"
	"net"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/isoobs/isoobs/k8s"
)

// DialFunc opens a byte stream to a daemon pod's gRPC port.
type DialFunc func(ctx context.Context, pod DaemonPod) (net.Conn, error)

// PortForwardDialer reaches daemon pods through the API server (k8s.PortForwardDialer) and
// turns an RBAC refusal into a PermissionError that says what to ask for.
type PortForwardDialer struct {
	pf *k8s.PortForwardDialer
}

// NewPortForwardDialer returns a dialer using the user's client config.
func NewPortForwardDialer(config *rest.Config) (*PortForwardDialer, error) {
	pf, err := k8s.NewPortForwardDialer(config)
	if err != nil {
		return nil, err
	}
	return &PortForwardDialer{pf: pf}, nil
}

// Dial implements DialFunc.
func (d *PortForwardDialer) Dial(ctx context.Context, pod DaemonPod) (net.Conn, error) {
	conn, err := d.pf.Dial(ctx, k8s.PodPort{Namespace: pod.Namespace, Name: pod.Name, Port: pod.Port})
	if err != nil && strings.Contains(err.Error(), "forbidden") {
		return nil, &PermissionError{Verb: "create", Resource: "pods/portforward", Namespace: pod.Namespace,
			Why: "to reach the isoobs daemon pods", APIError: err}
	}
	return conn, err
}

// CheckAccess asks the API server (SelfSubjectAccessReview) whether the user
// may port-forward to pods in namespace, so a missing permission is one clear
// error instead of one failure per node. If the review itself is not
// possible the check passes and the dials will tell.
func CheckAccess(ctx context.Context, client kubernetes.Interface, namespace string) error {
	review, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: namespace, Verb: "create", Resource: "pods", Subresource: "portforward",
		}},
	}, metav1.CreateOptions{})
	if err != nil || review.Status.Allowed {
		return nil
	}
	pe := &PermissionError{Verb: "create", Resource: "pods/portforward", Namespace: namespace, Why: "to reach the isoobs daemon pods",
		APIError: errors.New("SelfSubjectAccessReview denied: " + review.Status.Reason)}
	if review, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{}); err == nil {
		pe.User = review.Status.UserInfo.Username
	}
	return pe
}
