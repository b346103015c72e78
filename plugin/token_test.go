package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/isoobs/isoobs/plugin/internal/fakedaemon"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// --token-file's token goes to every daemon as "authorization: Bearer" metadata (what a daemon
// run with --tenant-authorization reviews; the daemon side is TestTenantAuthorization), and
// nothing is sent without it.
func TestTopDNSSendsTokenFile(t *testing.T) {
	frame := func(req *isoobsv1.TopRequest, n int, start, now time.Time) *isoobsv1.TopFrame {
		return fakedaemon.Stamp(&isoobsv1.TopFrame{Rows: []*isoobsv1.DNSRow{{Namespace: "tenant-a", Pod: "p", PodUid: "u", Queries: 1}}}, req, start, now)
	}
	srv := &fakedaemon.Server{Node: "node-a", Frame: frame}
	addr := fakedaemon.StartUnix(t, srv)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("eyJhbGciOi.tenant-a.sig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--token-file", tokenFile}, nil} {
		if _, errOut, err := runCmd(t, append([]string{"top", "dns", "--daemon", addr, "-n", "tenant-a", "--once", "-o", "json", "--interval", "100ms"}, args...)...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
	}
	if got := srv.Authorizations(); len(got) != 2 || got[0] != "Bearer eyJhbGciOi.tenant-a.sig" || got[1] != "" {
		t.Errorf("authorization metadata %q, want the token's once, then none", got)
	}

	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, want string }{
		{filepath.Join(t.TempDir(), "missing"), "kubectl create token SERVICEACCOUNT -n NAMESPACE --audience isoobs.io/daemon"},
		{empty, "must hold one token"},
	} {
		_, _, err := runCmd(t, "top", "dns", "--daemon", addr, "--once", "--token-file", tc.file)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--token-file %s: %v, want …%s…", tc.file, err, tc.want)
		}
	}
}
