package printers

import (
	"strconv"

	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// TraceHeader names the columns of a traced DNS message (top dns --trace, and the live view's
// drill-down).
var TraceHeader = []string{"TIME", "NODE", "CONTAINER", "KIND", "QTYPE", "QNAME", "RCODE", "ANSWERS", "LATENCY", "SERVER"}

// TraceRow is one traced message under TraceHeader.
func TraceRow(ev *isoobsv1.DNSEvent) []string {
	latency, answers := "-", "-"
	if ev.GetLatencyMs() > 0 {
		latency = strconv.FormatFloat(ev.GetLatencyMs(), 'f', 2, 64) + "ms"
	}
	if ev.GetKind() != "query" {
		answers = strconv.FormatUint(uint64(ev.GetAnswers()), 10)
	}
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	return []string{ev.GetTime().AsTime().Local().Format("15:04:05.000"), ev.GetNode(), dash(ev.GetContainer()), ev.GetKind(),
		ev.GetQtype(), ev.GetQname(), dash(ev.GetRcode()), answers, latency, ev.GetServer()}
}
