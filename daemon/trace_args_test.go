package daemon_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/isoobs/isoobs/cgroupv2"
	"github.com/isoobs/isoobs/daemon"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	"github.com/isoobs/isoobs/testlab/needroot"
)

// Trace says what is wrong with a request before it traces anything: no pod named, a sample
// beyond 1 in 65,536, or a daemon without the Kubernetes API to find the pod (the traced path
// itself is e2e.TestTracePod).
func TestTraceRefusesWhatItCannotDo(t *testing.T) {
	needroot.Require(t, "loads the eBPF probe")
	mount, err := cgroupv2.Detect()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(mount, fmt.Sprintf("isoobs-trace-args-%d", os.Getpid()))
	makeCgroups(t, root)
	d, err := daemon.New(daemon.Config{NodeName: "n", CgroupRoot: root, Interval: 200 * time.Millisecond, HubbleDisabled: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c := inProcessClient(t, d)
	for _, tc := range []struct {
		req  *isoobsv1.TraceRequest
		code codes.Code
		msg  string
	}{
		{&isoobsv1.TraceRequest{Namespace: "a"}, codes.InvalidArgument, "name its namespace and pod"},
		{&isoobsv1.TraceRequest{Namespace: "a", Pod: "p", SampleShift: 17}, codes.InvalidArgument, "at most 16"},
		{&isoobsv1.TraceRequest{Namespace: "a", Pod: "p"}, codes.FailedPrecondition, "needs the Kubernetes API"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := c.Trace(ctx, tc.req)
		if err == nil {
			_, err = s.Recv()
		}
		cancel()
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: %v, want %v …%s…", tc.req, err, tc.code, tc.msg)
		}
	}
}
