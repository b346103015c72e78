package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/isoobs/isoobs/plugin/printers"
	"github.com/isoobs/isoobs/plugin/top"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

func TestPrintTCPFrame(t *testing.T) {
	f := top.TCPFrame{GroupBy: top.GroupByPod, Rows: []top.TCPRow{{
		Namespace: "tenant-jobs", Pod: "crawler-1", Workload: "crawler", WorkloadKind: "Deployment", Node: "node-a",
		ConnectRefused: 40, ConnectFailuresPerSecond: 13.3, ResetsReceived: 2, RetransSegs: 5, SegsOut: 95,
		BytesOutPerSecond: 2048, RTTP50Ms: 0.25, RTTP99Ms: 1.5,
	}}}
	var out bytes.Buffer
	docs := 0
	if err := printTCPFrame(&out, f, printers.OutputTable, false, &docs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("table:\n%s", out.String())
	}
	for _, want := range []string{"NAMESPACE", "POD", "FAIL/S", "REFUSED", "RST-IN", "RETRANS%", "RTT-P99"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("header lacks %s: %s", want, lines[0])
		}
	}
	for _, want := range []string{"tenant-jobs", "crawler-1", "deployment/crawler", "13.3", "40", "5.00", "2.0KiB", "1.50ms"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row lacks %s: %s", want, lines[1])
		}
	}
	out.Reset()
	if err := printTCPFrame(&out, f, printers.OutputJSON, false, &docs); err != nil {
		t.Fatal(err)
	}
	var decoded map[string]any
	if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
		t.Fatal(err)
	}
	row := decoded["rows"].([]any)[0].(map[string]any)
	if row["connectRefused"] != 40.0 || row["pod"] != "crawler-1" || row["rttP99Ms"] != 1.5 {
		t.Errorf("json row: %v", row)
	}
}

func TestTopTCPValidates(t *testing.T) {
	for _, args := range [][]string{{"--sort", "qps"}, {"--group-by", "qname"}, {"--daemon", "x:1", "--local"}, {"--source", "hubble"}} {
		var out, errOut bytes.Buffer
		cmd := NewCmdTopTCP(nil, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err == nil {
			t.Errorf("top tcp %v: accepted", args)
		}
	}
}

func TestPrintDropFrame(t *testing.T) {
	f := top.DropFrame{GroupBy: top.GroupByPod, Rows: []top.DropRow{{Namespace: "shop", Pod: "api-1", Node: "node-a", Packets: 12, PacketsPerSecond: 4,
		Reasons: []top.DropReason{{Reason: "NETFILTER_DROP", Packets: 10}, {Reason: "NO_SOCKET", Packets: 2}}}},
		NoSocket:  top.DropRow{Packets: 7, Reasons: []top.DropReason{{Reason: "NO_SOCKET", Packets: 7}}},
		Locations: []top.DropLocation{{Location: "nf_hook_slow", Reason: "NETFILTER_DROP", Packets: 10}, {Location: "tcp_v4_rcv", Reason: "NO_SOCKET", Packets: 9}}}
	var out bytes.Buffer
	docs := 0
	if err := printDropFrame(&out, f, printers.OutputTable, false, &docs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DROPS/S", "REASONS", "api-1", "NETFILTER_DROP:10,NO_SOCKET:2", "(no socket, no pod's: 7 packets: NO_SOCKET:7)",
		"(where, node-wide: nf_hook_slow NETFILTER_DROP:10, tcp_v4_rcv NO_SOCKET:9)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestPrintTCPTopPeersAndGroupByPeer(t *testing.T) {
	row := top.TCPRow{Namespace: "tenant-jobs", Pod: "crawler-1", Node: "node-a", ResetsReceived: 50, ConnectRefused: 20,
		TopPeers: []top.TCPPeer{
			{IP: "10.96.0.50", Port: 8080, Kind: "service", Namespace: "tenant-jobs", Name: "resetter", ResetsReceived: 50, Share: 71.43},
			{IP: "10.0.1.8", Port: 80, ConnectRefused: 20, Share: 28.57},
			{IP: "10.0.1.7", Port: 443, Opens: 30},
			{IP: "10.0.1.9", Port: 443, Opens: 1},
		}, OtherPeers: 2}
	var out bytes.Buffer
	docs := 0
	if err := printTCPFrame(&out, top.TCPFrame{GroupBy: top.GroupByPod, Rows: []top.TCPRow{row}}, printers.OutputTable, false, &docs); err != nil {
		t.Fatal(err)
	}
	if want := "service/tenant-jobs/resetter:8080 71%,10.0.1.8:80 29%,10.0.1.7:443 0%,+3"; !strings.Contains(out.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, out.String())
	}
	out.Reset()
	peer := top.TCPPeer{IP: "10.0.1.5", Inbound: true, Kind: "pod", Namespace: "tenant-api", Name: "coreapi-0", Opens: 25, ResetsSent: 3, Pods: 1}
	if err := printTCPFrame(&out, top.TCPFrame{GroupBy: top.GroupByPeer, Rows: []top.TCPRow{{Pods: 1, Peer: &peer}}}, printers.OutputTable, false, &docs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "PEER") || strings.Join(strings.Fields(lines[1]), " ") != "<-pod/tenant-api/coreapi-0 10.0.1.5 1 25 0 0 3 0 0" {
		t.Errorf("group by peer table:\n%s", out.String())
	}
}

func TestClusterPeerNames(t *testing.T) {
	client := fake.NewSimpleClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "coreapi-0", Namespace: "tenant-api"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.0.1.7"}, {IP: "fd00::7"}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy-x", Namespace: "kube-system"},
			Spec: corev1.PodSpec{HostNetwork: true}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "192.168.1.10"}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "resetter", Namespace: "tenant-jobs"}, Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.50"}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.1.10"}}}},
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	names, err := startPeerNames(ctx, client, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]top.PeerName{
		"10.0.1.7":     {Kind: "pod", Namespace: "tenant-api", Name: "coreapi-0"},
		"fd00::7":      {Kind: "pod", Namespace: "tenant-api", Name: "coreapi-0"},
		"10.96.0.50":   {Kind: "service", Namespace: "tenant-jobs", Name: "resetter"},
		"192.168.1.10": {Kind: "node", Name: "node-a"}, // the host-network pod does not claim its node's IP
	} {
		if got, ok := names.Lookup(netip.MustParseAddr(ip)); !ok || got != want {
			t.Errorf("%s: %+v %v, want %+v", ip, got, ok, want)
		}
	}
	if _, ok := names.Lookup(netip.MustParseAddr("10.0.9.9")); ok {
		t.Error("an unknown IP was named")
	}
}

func TestTopDropsSourceAndHubbleColumn(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
	}{{[]string{"--source", "bogus"}, false}, {[]string{"--group-by", "peer"}, false}} {
		var out, errOut bytes.Buffer
		cmd := NewCmdTopDrops(nil, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(c.args)
		if err := cmd.Execute(); (err == nil) != c.ok {
			t.Errorf("top drops %v: err %v", c.args, err)
		}
	}
	o := &TopTCPOptions{src: NewTopDNSOptions(nil, genericiooptions.IOStreams{}), Sort: "packets", GroupBy: "pod", drops: true, Source: "hubble"}
	o.src.DaemonAddrs = []string{"127.0.0.1:1"}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if req := o.Request(); req.Source != isoobsv1.Source_SOURCE_HUBBLE || req.Dimension != isoobsv1.Dimension_DIMENSION_DROPS {
		t.Errorf("request %v, want DIMENSION_DROPS from SOURCE_HUBBLE", req)
	}
	f := top.DropFrame{GroupBy: top.GroupByPod, Rows: []top.DropRow{
		{Namespace: "shop", Pod: "api-1", Packets: 10, Reasons: []top.DropReason{{Reason: "NETFILTER_DROP", Packets: 10}}, HubbleReasons: []top.DropReason{{Reason: "POLICY_DENIED", Packets: 4}}, Sources: []string{"ebpf", "hubble"}},
		{Namespace: "shop", Pod: "db-0", Packets: 2, Reasons: []top.DropReason{{Reason: "NO_SOCKET", Packets: 2}}, Sources: []string{"ebpf"}}}}
	var out bytes.Buffer
	docs := 0
	if err := printDropFrame(&out, f, printers.OutputTable, false, &docs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "HUBBLE") || !strings.HasSuffix(lines[1], "POLICY_DENIED:4") || !strings.HasSuffix(strings.TrimSpace(lines[2]), "-") {
		t.Errorf("table with Hubble's reasons:\n%s", out.String())
	}
}
