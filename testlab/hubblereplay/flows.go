package hubblereplay

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
	observerpb "github.com/isoobs/isoobs/proto/observer/observer"
)

// Monitor event types of Hubble flows (Cilium's pkg/monitor/api message types).
const (
	EventTypeDrop      = 1
	EventTypeTrace     = 4
	EventTypeAccessLog = 129 // L7 flows
)

// Pod describes an endpoint for the flow builders below, the way Hubble reports a pod.
type Pod struct {
	Namespace, Name        string
	Workload, WorkloadKind string
	Identity               uint32
	// Labels in Kubernetes form (app=crawler); Hubble shows them as k8s:app=crawler.
	Labels map[string]string
	IP     string
}

// Endpoint is the pod as a flow endpoint.
func (p Pod) Endpoint() *flowpb.Endpoint {
	ep := &flowpb.Endpoint{Identity: p.Identity, Namespace: p.Namespace, PodName: p.Name}
	for k, v := range p.Labels {
		ep.Labels = append(ep.Labels, "k8s:"+k+"="+v)
	}
	if p.Namespace != "" {
		ep.Labels = append(ep.Labels, "k8s:io.kubernetes.pod.namespace="+p.Namespace)
	}
	if p.Workload != "" {
		ep.Workloads = []*flowpb.Workload{{Name: p.Workload, Kind: p.WorkloadKind}}
	}
	return ep
}

// DNSExchange describes one DNS query as Hubble's DNS proxy reports it.
type DNSExchange struct {
	Node           string
	Time           time.Time
	Client, Server Pod
	ClientPort     uint32
	Query          string // "example.com." (Hubble keeps the trailing dot)
	QType          string // "A"
	Rcode          uint32
	Latency        time.Duration
	// Denied: the proxy refused the query by policy (a DROPPED request, no response flow).
	Denied bool
}

// Flows returns the L7 request flow and, unless denied, the response flow.
func (x DNSExchange) Flows() []*flowpb.Flow {
	qtype := x.QType
	if qtype == "" {
		qtype = "A"
	}
	verdict := flowpb.Verdict_FORWARDED
	if x.Denied {
		verdict = flowpb.Verdict_DROPPED
	}
	req := &flowpb.Flow{
		Time: timestamppb.New(x.Time), Uuid: fmt.Sprintf("dns-%s-%d-%d", x.Client.Name, x.ClientPort, x.Time.UnixNano()),
		Verdict: verdict, Type: flowpb.FlowType_L7, NodeName: x.Node,
		IP:     &flowpb.IP{Source: x.Client.IP, Destination: x.Server.IP, IpVersion: flowpb.IPVersion_IPv4},
		L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: x.ClientPort, DestinationPort: 53}}},
		Source: x.Client.Endpoint(), Destination: x.Server.Endpoint(),
		L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
			Query: x.Query, Qtypes: []string{qtype}, ObservationSource: "proxy",
		}}},
		EventType:        &flowpb.CiliumEventType{Type: EventTypeAccessLog},
		TrafficDirection: flowpb.TrafficDirection_EGRESS,
		IsReply:          wrapperspb.Bool(false),
		Summary:          "DNS Query " + x.Query + " " + qtype,
	}
	if x.Denied {
		return []*flowpb.Flow{req}
	}
	at := x.Time.Add(x.Latency)
	resp := &flowpb.Flow{
		Time: timestamppb.New(at), Uuid: req.Uuid + "-r",
		Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7, NodeName: x.Node,
		IP:     &flowpb.IP{Source: x.Server.IP, Destination: x.Client.IP, IpVersion: flowpb.IPVersion_IPv4},
		L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 53, DestinationPort: x.ClientPort}}},
		Source: x.Server.Endpoint(), Destination: x.Client.Endpoint(),
		L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: uint64(x.Latency.Nanoseconds()), Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
			Query: x.Query, Qtypes: []string{qtype}, Rcode: x.Rcode, ObservationSource: "proxy",
		}}},
		EventType:        &flowpb.CiliumEventType{Type: EventTypeAccessLog},
		TrafficDirection: flowpb.TrafficDirection_EGRESS,
		IsReply:          wrapperspb.Bool(true),
		Summary:          fmt.Sprintf("DNS Answer RCode: %d TTL: 30 (Proxy %s %s)", x.Rcode, x.Query, qtype),
	}
	return []*flowpb.Flow{req, resp}
}

// Drop is a packet dropped by the datapath (Hubble's `--type drop`), egress from src.
func Drop(node string, t time.Time, src, dst Pod, proto string, dstPort uint32, reason flowpb.DropReason) *flowpb.Flow {
	f := &flowpb.Flow{
		Time: timestamppb.New(t), Uuid: fmt.Sprintf("drop-%s-%d", src.Name, t.UnixNano()),
		Verdict: flowpb.Verdict_DROPPED, DropReasonDesc: reason, DropReason: uint32(reason), Type: flowpb.FlowType_L3_L4, NodeName: node,
		IP:     &flowpb.IP{Source: src.IP, Destination: dst.IP, IpVersion: flowpb.IPVersion_IPv4},
		Source: src.Endpoint(), Destination: dst.Endpoint(),
		EventType:        &flowpb.CiliumEventType{Type: EventTypeDrop, SubType: int32(reason)},
		TrafficDirection: flowpb.TrafficDirection_EGRESS,
		IsReply:          wrapperspb.Bool(false),
		Summary:          proto,
	}
	if proto == "TCP" {
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: dstPort, Flags: &flowpb.TCPFlags{SYN: true}}}}
	} else {
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 40000, DestinationPort: dstPort}}}
	}
	return f
}

// HTTPExchange is one HTTP request and its response through the L7 proxy.
func HTTPExchange(node string, t time.Time, client, server Pod, method, url string, code uint32, latency time.Duration) []*flowpb.Flow {
	l4 := func(sp, dp uint32) *flowpb.Layer4 {
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sp, DestinationPort: dp}}}
	}
	req := &flowpb.Flow{
		Time: timestamppb.New(t), Uuid: fmt.Sprintf("http-%s-%d", client.Name, t.UnixNano()),
		Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7, NodeName: node,
		IP: &flowpb.IP{Source: client.IP, Destination: server.IP, IpVersion: flowpb.IPVersion_IPv4}, L4: l4(41000, 8080),
		Source: client.Endpoint(), Destination: server.Endpoint(),
		L7:               &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Method: method, Url: url, Protocol: "HTTP/1.1"}}},
		EventType:        &flowpb.CiliumEventType{Type: EventTypeAccessLog},
		TrafficDirection: flowpb.TrafficDirection_EGRESS, IsReply: wrapperspb.Bool(false),
	}
	resp := &flowpb.Flow{
		Time: timestamppb.New(t.Add(latency)), Uuid: req.Uuid + "-r",
		Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7, NodeName: node,
		IP: &flowpb.IP{Source: server.IP, Destination: client.IP, IpVersion: flowpb.IPVersion_IPv4}, L4: l4(8080, 41000),
		Source: server.Endpoint(), Destination: client.Endpoint(),
		L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: uint64(latency.Nanoseconds()),
			Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Code: code, Method: method, Url: url, Protocol: "HTTP/1.1"}}},
		EventType:        &flowpb.CiliumEventType{Type: EventTypeAccessLog},
		TrafficDirection: flowpb.TrafficDirection_EGRESS, IsReply: wrapperspb.Bool(true),
	}
	return []*flowpb.Flow{req, resp}
}

// Lost is a lost-events notice as Hubble sends it.
func Lost(node string, t time.Time, source flowpb.LostEventSource, n uint64) *observerpb.GetFlowsResponse {
	return &observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
			Source: source, NumEventsLost: n, Cpu: wrapperspb.Int32(1), First: timestamppb.New(t), Last: timestamppb.New(t),
		}},
		NodeName: node, Time: timestamppb.New(t),
	}
}

// Events wraps flows as GetFlowsResponses (the export format's lines).
func Events(flows ...*flowpb.Flow) []*observerpb.GetFlowsResponse {
	out := make([]*observerpb.GetFlowsResponse, len(flows))
	for i, f := range flows {
		out[i] = &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: f.GetNodeName(), Time: f.GetTime()}
	}
	return out
}
