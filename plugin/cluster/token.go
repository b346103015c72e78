package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
)

// TenantAudience is the audience a token sent to daemons run with --tenant-authorization
// must have (the daemon's daemon.TenantAudience; kept here so the plugin does not import the
// daemon).
const TenantAudience = "isoobs.io/daemon"

// BearerToken sends a token as "authorization: Bearer TOKEN" gRPC metadata on every call; the
// daemon reviews it (TokenReview) when it runs with tenant authorization. The daemon API is
// plaintext inside the port-forward, whose tunnel to the API server is TLS, so the credential
// does not ask gRPC for transport security.
type BearerToken string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t BearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (BearerToken) RequireTransportSecurity() bool { return false }

// DialOptions are the gRPC options every connection to a daemon gets from o: the token of
// --token-file, if one was given.
func (o Options) DialOptions() ([]grpc.DialOption, error) {
	if o.TokenFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(o.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("read --token-file: %w (make one with: kubectl create token SERVICEACCOUNT -n NAMESPACE --audience %s > FILE)", err, TenantAudience)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return nil, errors.New("--token-file " + o.TokenFile + " must hold one token (kubectl create token SERVICEACCOUNT -n NAMESPACE --audience " + TenantAudience + ")")
	}
	return []grpc.DialOption{grpc.WithPerRPCCredentials(BearerToken(tok))}, nil
}
