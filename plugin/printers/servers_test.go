package printers

import (
	"bytes"
	"strings"
	"testing"

	"github.com/isoobs/isoobs/plugin/top"
)

func TestServerTable(t *testing.T) {
	f := top.Frame{GroupBy: top.GroupByServer, Rows: []top.Row{
		{Server: "10.0.0.6", Namespace: "kube-system", Pod: "coredns-b", Pods: 1, QPS: 3, Queries: 30, Responses: 30, Share: 30.0 / 130,
			LatencyAvgMs: 50, ServedQueries: 30, ServedResponses: 30, ServedServFail: 2, ServedLatencyP50Ms: 49.2, ServedLatencyP99Ms: 65.1},
		{Server: "10.96.0.10", Pods: 1, QPS: 4, Queries: 40, Responses: 38, ServFail: 2, Share: 40.0 / 130, LatencyAvgMs: 2},
	}}
	var b bytes.Buffer
	if err := WriteTable(&b, f, false, false); err != nil {
		t.Fatal(err)
	}
	want := `SERVER       POD                     CLIENTS   QPS   QUERIES   SHARE   NXDOMAIN   SERVFAIL   UNANSWERED   AVG      SERVED   SRV-SERVFAIL   SRV-P50   SRV-P99
10.0.0.6     kube-system/coredns-b   1         3.0   30        23.1%   0          0          0            50.0ms   30       2              49.2ms    65.1ms
10.96.0.10   <none>                  1         4.0   40        30.8%   0          2          2            2.00ms   -        -              -         -
`
	if got := b.String(); got != want {
		t.Errorf("server table:\n%s\nwant:\n%s", got, want)
	}
}

func TestServersColumnInWideOutput(t *testing.T) {
	f := top.Frame{GroupBy: top.GroupByPod, Rows: []top.Row{{Namespace: "app", Pod: "web", Queries: 100, Responses: 98, Servers: []top.Server{
		{Address: "10.0.0.5", Name: "kube-system/coredns-a", Share: 0.6, Queries: 60, Timed: 60, LatencyAvgMs: 1},
		{Address: "10.96.0.10", Share: 0.4, Queries: 40, ServFail: 2, Timed: 38, LatencyAvgMs: 2},
	}}}}
	var b bytes.Buffer
	if err := WriteTable(&b, f, true, false); err != nil {
		t.Fatal(err)
	}
	if want := "kube-system/coredns-a:60%/1.00ms,10.96.0.10:40%/2.00ms/sf2"; !strings.Contains(b.String(), want) {
		t.Errorf("wide output lacks SERVERS %q:\n%s", want, b.String())
	}
	b.Reset()
	if err := WriteTable(&b, f, false, false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "SERVERS") {
		t.Errorf("the narrow table shows SERVERS without --server:\n%s", b.String())
	}
}
