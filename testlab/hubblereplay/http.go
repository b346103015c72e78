package hubblereplay

import (
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
)

// HTTPRequest is one HTTP request through Cilium's L7 proxy (Envoy) as Hubble reports it, field
// for field as cilium v1.20.2 builds it (pkg/envoy/accesslog_server.go, pkg/hubble/parser/seven):
// a REQUEST record (verdict FORWARDED, or DROPPED when the L7 policy denies it), then a RESPONSE
// record with source and destination swapped, the status code, the response headers and
// l7.latency_ns (the parser matches the two by their x-request-id header). A denied request's
// response is the proxy's own 403. traffic_direction is the proxy's observation point: INGRESS
// for a policy of the server's, EGRESS for one of the client's.
type HTTPRequest struct {
	Node           string
	Time           time.Time
	Client, Server Pod
	ClientPort     uint32 // default 40000
	ServerPort     uint32 // default 8080
	Method         string // default GET
	// URL as the proxy logs it (scheme://authority/path?query), e.g.
	// http://coreapi.tenant-jobs:8080/applicants/42.
	URL      string
	Protocol string // default HTTP/1.1
	Code     uint32
	Latency  time.Duration
	// Egress: seen by the proxy of an egress policy on the client (default: ingress, the server's).
	Egress bool
	// Denied: the L7 policy denied it (a DROPPED request; the response is the proxy's 403).
	Denied bool
	// RequestID is the x-request-id Envoy adds (default: one derived from the time and ports).
	RequestID string
	// Service is the request's destination_service: set only where the proxy sees a Service
	// address; with kube-proxy replacement it sees the backend pod and Hubble names none.
	Service *flowpb.Service
	// EndpointIDs are the Cilium endpoint ids of client and server (0: derived from identities).
	ClientEndpointID, ServerEndpointID uint32
}

func (x HTTPRequest) endpoint(p Pod, id uint32) *flowpb.Endpoint {
	ep := p.Endpoint()
	if id == 0 {
		id = p.Identity % 4096
	}
	ep.ID = id
	slices.Sort(ep.Labels)
	return ep
}

// Flows returns the REQUEST and RESPONSE flows.
func (x HTTPRequest) Flows() []*flowpb.Flow {
	if x.ClientPort == 0 {
		x.ClientPort = 40000
	}
	if x.ServerPort == 0 {
		x.ServerPort = 8080
	}
	if x.Method == "" {
		x.Method = "GET"
	}
	if x.Protocol == "" {
		x.Protocol = "HTTP/1.1"
	}
	if x.RequestID == "" {
		x.RequestID = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(x.Time.UnixNano()), x.ClientPort&0xffff, x.ServerPort&0xfff, x.Time.Nanosecond()&0xfff, x.Time.UnixNano()&0xffffffffffff)
	}
	code := x.Code
	if x.Denied {
		code = 403
	}
	dir := flowpb.TrafficDirection_INGRESS
	if x.Egress {
		dir = flowpb.TrafficDirection_EGRESS
	}
	client, server := x.endpoint(x.Client, x.ClientEndpointID), x.endpoint(x.Server, x.ServerEndpointID)
	emitter := &flowpb.Emitter{Name: "Hubble", Version: "1.20.2"}
	l4 := func(sp, dp uint32) *flowpb.Layer4 {
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sp, DestinationPort: dp}}}
	}
	verdict := flowpb.Verdict_FORWARDED
	if x.Denied {
		verdict = flowpb.Verdict_DROPPED
	}
	req := &flowpb.Flow{
		Time: timestamppb.New(x.Time), Uuid: fmt.Sprintf("http-%s-%d-%d", x.Client.Name, x.ClientPort, x.Time.UnixNano()), Emitter: emitter,
		Verdict: verdict, Type: flowpb.FlowType_L7, NodeName: x.Node,
		IP: &flowpb.IP{Source: x.Client.IP, Destination: x.Server.IP, IpVersion: flowpb.IPVersion_IPv4}, L4: l4(x.ClientPort, x.ServerPort),
		Source: client, Destination: server,
		L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
			Method: x.Method, Url: x.URL, Protocol: x.Protocol,
			Headers: []*flowpb.HTTPHeader{{Key: "Accept", Value: "*/*"}, {Key: "User-Agent", Value: "curl/8.5.0"}, {Key: "X-Envoy-Internal", Value: "true"}, {Key: "X-Request-Id", Value: x.RequestID}},
		}}},
		EventType:          &flowpb.CiliumEventType{Type: EventTypeAccessLog},
		TrafficDirection:   dir,
		IsReply:            wrapperspb.Bool(false),
		DestinationService: x.Service,
		Summary:            x.Protocol + " " + x.Method + " " + x.URL,
	}
	at := x.Time.Add(x.Latency)
	var srcSvc *flowpb.Service
	if x.Service != nil {
		srcSvc = x.Service // the response's source is the address the request went to
	}
	resp := &flowpb.Flow{
		Time: timestamppb.New(at), Uuid: req.Uuid + "-r", Emitter: emitter,
		Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7, NodeName: x.Node,
		IP: &flowpb.IP{Source: x.Server.IP, Destination: x.Client.IP, IpVersion: flowpb.IPVersion_IPv4}, L4: l4(x.ServerPort, x.ClientPort),
		Source: server, Destination: client,
		L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: uint64(x.Latency.Nanoseconds()), Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
			Code: code, Method: x.Method, Url: x.URL, Protocol: x.Protocol,
			Headers: []*flowpb.HTTPHeader{{Key: "Content-Length", Value: "17"}, {Key: "Content-Type", Value: "application/json"}, {Key: "X-Request-Id", Value: x.RequestID}},
		}}},
		EventType:        &flowpb.CiliumEventType{Type: EventTypeAccessLog},
		TrafficDirection: dir,
		IsReply:          wrapperspb.Bool(true),
		Reply:            true,
		SourceService:    srcSvc,
		Summary:          fmt.Sprintf("%s %d %dms (%s %s)", x.Protocol, code, x.Latency.Milliseconds(), x.Method, x.URL),
	}
	return []*flowpb.Flow{req, resp}
}
