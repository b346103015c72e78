package daemon

import (
	"strconv"
	"testing"
	"time"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/hubble"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
	"github.com/isoobs/isoobs/testlab/hubblereplay"
)

func dropRowOf(rows []*isoobsv1.DropRow, pod string) *isoobsv1.DropRow {
	for _, r := range rows {
		if r.Pod == pod {
			return r
		}
	}
	return nil
}

func reasonsString(rs []*isoobsv1.DropReasonCount) string {
	s := ""
	for _, r := range rs {
		s += r.Reason + ":" + strconv.FormatUint(r.Packets, 10) + " "
	}
	return s
}

// The kernel counted 30 NETFILTER_DROP drops of the crawler's packets; Hubble reported 12
// POLICY_DENIED drops of the crawler's and 5 of the loader's, a pod the probe saw no drops of.
// Merged: the crawler's row keeps the kernel's packets with Hubble's reasons beside them
// (sources ebpf+hubble), the loader is a row of Hubble's alone; --source picks one side.
func TestDropsMergeHubble(t *testing.T) {
	f := newTCPFixture(t)
	agg := hubble.NewAggregator(hubble.AggregatorConfig{})
	f.tc.hubble = func() *hubble.Aggregator { return agg }
	f.step()
	reasons, err := bpfDropReasons()
	if err != nil {
		t.Skip(err)
	}
	f.tsrc.mu.Lock()
	f.tsrc.drops[bpf.DropKey{CgroupID: 101, Reason: reasons["NETFILTER_DROP"]}] = bpf.DropCounters{Packets: 30, Bytes: 3000}
	f.tsrc.mu.Unlock()
	drop := func(src, dst hubblereplay.Pod, n int) {
		for range n {
			agg.ObserveAt(hubblereplay.Drop("node-a", time.Now(), src, dst, "TCP", 8080, flowpb.DropReason_POLICY_DENIED), time.Now())
		}
	}
	drop(hubCrawlerA, hubLoader, 12)
	drop(hubLoader, hubCoreDNS, 5)
	f.step()

	fr := f.frame(t, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS})
	cr, ld := dropRowOf(fr.DropRows, "crawler-7d9f-a"), dropRowOf(fr.DropRows, "loader-1")
	if len(fr.DropRows) != 2 || cr == nil || ld == nil {
		t.Fatalf("rows %v, want the crawler and the loader", fr.DropRows)
	}
	if cr.Packets != 30 || reasonsString(cr.Reasons) != "NETFILTER_DROP:30 " || reasonsString(cr.HubbleReasons) != "POLICY_DENIED:12 " ||
		len(cr.Sources) != 2 || cr.Sources[0] != "ebpf" || cr.Sources[1] != "hubble" {
		t.Errorf("crawler: %v; want 30 kernel packets (NETFILTER_DROP), Hubble's POLICY_DENIED:12 beside them, sources ebpf+hubble", cr)
	}
	if ld.Packets != 5 || len(ld.Reasons) != 0 || reasonsString(ld.HubbleReasons) != "POLICY_DENIED:5 " || len(ld.Sources) != 1 || ld.Sources[0] != "hubble" ||
		ld.Namespace != "tenant-jobs" || ld.Workload != "loader" || ld.Node != "node-a" {
		t.Errorf("loader: %v; want Hubble's 5 POLICY_DENIED, source hubble, tenant-jobs/loader on node-a", ld)
	}
	if fr.DropTotal.Packets != 35 {
		t.Errorf("total %d packets, want 35 (the crawler's 30 from the kernel, the loader's 5 from Hubble)", fr.DropTotal.Packets)
	}

	fr = f.frame(t, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS, Source: isoobsv1.Source_SOURCE_EBPF})
	if len(fr.DropRows) != 1 || fr.DropRows[0].Packets != 30 || len(fr.DropRows[0].HubbleReasons) != 0 {
		t.Errorf("--source ebpf: %v, want the crawler's 30 kernel drops alone", fr.DropRows)
	}
	fr = f.frame(t, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS, Source: isoobsv1.Source_SOURCE_HUBBLE})
	if cr, ld = dropRowOf(fr.DropRows, "crawler-7d9f-a"), dropRowOf(fr.DropRows, "loader-1"); len(fr.DropRows) != 2 || cr == nil || cr.Packets != 12 || ld == nil || ld.Packets != 5 {
		t.Errorf("--source hubble: %v, want the crawler's 12 and the loader's 5", fr.DropRows)
	}
	fr = f.frame(t, &isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS, Namespace: "tenant-jobs", LabelSelector: "app=loader"})
	if len(fr.DropRows) != 1 || fr.DropRows[0].Pod != "loader-1" {
		t.Errorf("-l app=loader: %v, want the loader's Hubble row (labels from Hubble's k8s: labels)", fr.DropRows)
	}

	// Since a stream's start: Hubble's counts after it only.
	q, err := newTCPQuery(&isoobsv1.TopRequest{Dimension: isoobsv1.Dimension_DIMENSION_DROPS, SinceStreamStart: true}, f.cfg.Interval)
	if err != nil {
		t.Fatal(err)
	}
	f.tc.startStream(q)
	drop(hubCrawlerA, hubLoader, 3)
	f.step()
	fr = f.tc.frame(q)
	if len(fr.DropRows) != 1 || reasonsString(fr.DropRows[0].HubbleReasons) != "POLICY_DENIED:3 " || fr.DropRows[0].Packets != 3 || fr.DropRows[0].Sources[0] != "hubble" {
		t.Errorf("since stream start: %v, want the crawler's 3 new Hubble drops only (no kernel drops since)", fr.DropRows)
	}
}
