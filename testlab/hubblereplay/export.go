// Package hubblereplay is a Hubble server for tests and demos where Cilium cannot run: it implements
// the real observer.Observer gRPC service (GetFlows with follow, ServerStatus, GetNodes,
// GetNamespaces) and the gRPC health service, and serves flows written in Hubble's JSON export
// format (what `hubble observe -o json` prints and Hubble's exporter writes to events.log).
package hubblereplay

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protojson"

	observerpb "github.com/isoobs/isoobs/proto/observer/observer"
)

// ReadStats says what ReadExport made of its input.
type ReadStats struct {
	Lines   int // non-empty lines
	Events  int // lines turned into events
	Skipped int // lines that were not valid events
	// Errors describes the first few skipped lines ("line N: why").
	Errors []string
}

const maxReportedErrors = 10

// ReadExport parses one GetFlowsResponse per line ({"flow": {...}, "node_name": ..., "time": ...}
// or {"lost_events": {...}, ...}). Lines that are not JSON, or hold neither a flow, a lost-events
// notice nor a node status, are skipped and counted; only a read error fails.
func ReadExport(r io.Reader) ([]*observerpb.GetFlowsResponse, ReadStats, error) {
	var st ReadStats
	var out []*observerpb.GetFlowsResponse
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		st.Lines++
		resp := &observerpb.GetFlowsResponse{}
		err := opts.Unmarshal(line, resp)
		if err == nil && resp.GetResponseTypes() == nil {
			err = fmt.Errorf("no flow, lost_events or node_status in it")
		}
		if err != nil {
			st.Skipped++
			if len(st.Errors) < maxReportedErrors {
				st.Errors = append(st.Errors, fmt.Sprintf("line %d: %v", n, err))
			}
			continue
		}
		st.Events++
		out = append(out, resp)
	}
	if err := sc.Err(); err != nil {
		return out, st, fmt.Errorf("reading Hubble JSON export after line %d: %w", n, err)
	}
	return out, st, nil
}

// MarshalExport writes events in the export format, one JSON object per line.
func MarshalExport(w io.Writer, events []*observerpb.GetFlowsResponse) error {
	bw := bufio.NewWriter(w)
	for _, ev := range events {
		b, err := protojson.Marshal(ev)
		if err != nil {
			return err
		}
		bw.Write(b)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}
