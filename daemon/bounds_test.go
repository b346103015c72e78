package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// topStream is a Top stream whose client never reads: Send is never reached in these tests.
type topStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s topStream) Context() context.Context      { return s.ctx }
func (s topStream) Send(*isoobsv1.TopFrame) error { return nil }

// One client cannot ask for more than a daemon bounds, nor open more streams than it serves.
func TestTopBounds(t *testing.T) {
	f := newFixture(t, nil)
	s := &server{d: &Daemon{cfg: *f.cfg, src: f.src, coll: f.c}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		req  *isoobsv1.TopRequest
		want string
	}{
		{&isoobsv1.TopRequest{TopNames: maxTopNames + 1}, "top_names 101 is more than the 100"},
		{&isoobsv1.TopRequest{Limit: maxTopLimit + 1}, "limit 100001 is more than 100000 rows"},
		{&isoobsv1.TopRequest{Interval: durationpb.New(f.cfg.Retention + time.Second)}, "is longer than the history this daemon keeps (--retention 15m0s)"},
		{&isoobsv1.TopRequest{NameRegex: strings.Repeat("x", maxNameRegex+1)}, "name_regex is 513 bytes"},
		{&isoobsv1.TopRequest{Since: durationpb.New(f.cfg.Retention + time.Second)}, "since 15m1s is longer than the history"},
	} {
		err := s.Top(tc.req, topStream{ctx: ctx})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Top(%v) = %v, want InvalidArgument %q", tc.req, err, tc.want)
		}
	}
	for range maxTopStreams {
		f.c.subscribe()
	}
	err := s.Top(&isoobsv1.TopRequest{}, topStream{ctx: ctx})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "at most 32 top streams") {
		t.Fatalf("stream %d: %v, want ResourceExhausted", maxTopStreams+1, err)
	}
}
