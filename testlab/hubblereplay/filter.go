package hubblereplay

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	flowpb "github.com/isoobs/isoobs/proto/observer/flow"
)

// flowMatcher is one compiled FlowFilter: every set field must match (Hubble's semantics:
// fields AND, values of one field OR).
type flowMatcher []func(*flowpb.Flow) bool

func (m flowMatcher) match(f *flowpb.Flow) bool {
	for _, fn := range m {
		if !fn(f) {
			return false
		}
	}
	return true
}

// filterSet is a compiled whitelist or blacklist: it matches when any filter does.
type filterSet []flowMatcher

func (s filterSet) any(f *flowpb.Flow) bool {
	for _, m := range s {
		if m.match(f) {
			return true
		}
	}
	return false
}

// compileFilters compiles filters, refusing fields this server does not implement (a replay
// that silently ignored a filter would answer a different question than Hubble).
func compileFilters(filters []*flowpb.FlowFilter) (filterSet, error) {
	var out filterSet
	for i, ff := range filters {
		m, err := compileFilter(ff)
		if err != nil {
			return nil, fmt.Errorf("filter %d: %w", i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func compileFilter(ff *flowpb.FlowFilter) (flowMatcher, error) {
	var m flowMatcher
	var unsupported []string
	var err error
	ff.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		switch fd.Name() {
		case "uuid", "source_ip", "destination_ip", "source_pod", "destination_pod", "source_label",
			"destination_label", "source_workload", "destination_workload", "traffic_direction", "verdict",
			"drop_reason_desc", "event_type", "protocol", "source_port", "destination_port", "reply",
			"dns_query", "source_identity", "destination_identity", "http_status_code", "http_method", "node_name":
		default:
			unsupported = append(unsupported, string(fd.Name()))
		}
		return true
	})
	if len(unsupported) > 0 {
		return nil, fmt.Errorf("the replay server does not implement FlowFilter fields %s", strings.Join(unsupported, ", "))
	}
	if v := ff.GetUuid(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetUuid()) })
	}
	if v := ff.GetSourceIp(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetIP().GetSource()) })
	}
	if v := ff.GetDestinationIp(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetIP().GetDestination()) })
	}
	if v := ff.GetSourcePod(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return podMatches(v, f.GetSource()) })
	}
	if v := ff.GetDestinationPod(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return podMatches(v, f.GetDestination()) })
	}
	if v := ff.GetSourceLabel(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return labelsMatch(v, f.GetSource().GetLabels()) })
	}
	if v := ff.GetDestinationLabel(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return labelsMatch(v, f.GetDestination().GetLabels()) })
	}
	if v := ff.GetSourceWorkload(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return workloadMatches(v, f.GetSource().GetWorkloads()) })
	}
	if v := ff.GetDestinationWorkload(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return workloadMatches(v, f.GetDestination().GetWorkloads()) })
	}
	if v := ff.GetTrafficDirection(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetTrafficDirection()) })
	}
	if v := ff.GetVerdict(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetVerdict()) })
	}
	if v := ff.GetDropReasonDesc(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetDropReasonDesc()) })
	}
	if v := ff.GetEventType(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool {
			et := f.GetEventType()
			for _, want := range v {
				if want.GetType() == et.GetType() && (!want.GetMatchSubType() || want.GetSubType() == et.GetSubType()) {
					return true
				}
			}
			return false
		})
	}
	if v := ff.GetProtocol(); len(v) > 0 {
		for _, p := range v {
			if !knownProtocol(p) {
				return nil, fmt.Errorf("unknown protocol %q", p)
			}
		}
		m = append(m, func(f *flowpb.Flow) bool {
			return slices.ContainsFunc(v, func(p string) bool { return protocolMatches(p, f) })
		})
	}
	if v := ff.GetSourcePort(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { src, _ := ports(f); return slices.Contains(v, src) })
	}
	if v := ff.GetDestinationPort(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { _, dst := ports(f); return slices.Contains(v, dst) })
	}
	if v := ff.GetReply(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool {
			return f.GetIsReply() != nil && slices.Contains(v, f.GetIsReply().GetValue())
		})
	}
	if v := ff.GetDnsQuery(); len(v) > 0 {
		var res []*regexp.Regexp
		for _, q := range v {
			re, e := regexp.Compile(q)
			if e != nil {
				return nil, fmt.Errorf("dns_query %q: %v", q, e)
			}
			res = append(res, re)
		}
		m = append(m, func(f *flowpb.Flow) bool {
			dns := f.GetL7().GetDns()
			return dns != nil && slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(dns.GetQuery()) })
		})
	}
	if v := ff.GetSourceIdentity(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetSource().GetIdentity()) })
	}
	if v := ff.GetDestinationIdentity(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetDestination().GetIdentity()) })
	}
	if v := ff.GetHttpStatusCode(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool {
			h := f.GetL7().GetHttp()
			if h == nil || h.GetCode() == 0 {
				return false
			}
			code := strconv.Itoa(int(h.GetCode()))
			for _, want := range v {
				// "404" matches exactly, "5+" matches a class (hubble --http-status 5+).
				if p, ok := strings.CutSuffix(want, "+"); ok && strings.HasPrefix(code, p) || want == code {
					return true
				}
			}
			return false
		})
	}
	if v := ff.GetHttpMethod(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool {
			h := f.GetL7().GetHttp()
			return h != nil && slices.ContainsFunc(v, func(s string) bool { return strings.EqualFold(s, h.GetMethod()) })
		})
	}
	if v := ff.GetNodeName(); len(v) > 0 {
		m = append(m, func(f *flowpb.Flow) bool {
			return slices.ContainsFunc(v, func(p string) bool { ok, _ := path.Match(p, f.GetNodeName()); return ok })
		})
	}
	return m, err
}

// podMatches implements Hubble's "namespace/pod-prefix" pod filter ("ns/" matches a namespace,
// a value without "/" a pod prefix in any namespace).
func podMatches(want []string, ep *flowpb.Endpoint) bool {
	for _, w := range want {
		ns, prefix, ok := strings.Cut(w, "/")
		if !ok {
			ns, prefix = "", w
		}
		if (ns == "" || ns == ep.GetNamespace()) && ep.GetPodName() != "" && strings.HasPrefix(ep.GetPodName(), prefix) {
			return true
		}
		if ok && prefix == "" && ns == ep.GetNamespace() {
			return true
		}
	}
	return false
}

// labelsMatch accepts equality selectors "key=value" and "source:key=value" (comma = AND).
func labelsMatch(want []string, labels []string) bool {
	has := func(sel string) bool {
		for _, l := range labels {
			if l == sel {
				return true
			}
			if _, rest, ok := strings.Cut(l, ":"); ok && rest == sel {
				return true
			}
		}
		return false
	}
	for _, w := range want {
		all := true
		for _, sel := range strings.Split(w, ",") {
			if !has(strings.TrimSpace(sel)) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func workloadMatches(want []*flowpb.Workload, have []*flowpb.Workload) bool {
	for _, w := range want {
		for _, h := range have {
			if (w.GetName() == "" || w.GetName() == h.GetName()) && (w.GetKind() == "" || w.GetKind() == h.GetKind()) {
				return true
			}
		}
	}
	return false
}

func knownProtocol(p string) bool {
	switch strings.ToLower(p) {
	case "tcp", "udp", "icmp", "icmpv4", "icmpv6", "sctp", "http", "dns", "kafka":
		return true
	}
	return false
}

func protocolMatches(p string, f *flowpb.Flow) bool {
	l4, l7 := f.GetL4(), f.GetL7()
	switch strings.ToLower(p) {
	case "tcp":
		return l4.GetTCP() != nil
	case "udp":
		return l4.GetUDP() != nil
	case "icmp":
		return l4.GetICMPv4() != nil || l4.GetICMPv6() != nil
	case "icmpv4":
		return l4.GetICMPv4() != nil
	case "icmpv6":
		return l4.GetICMPv6() != nil
	case "sctp":
		return l4.GetSCTP() != nil
	case "http":
		return l7.GetHttp() != nil
	case "dns":
		return l7.GetDns() != nil
	case "kafka":
		return l7.GetKafka() != nil //nolint:staticcheck // deprecated but still a protocol filter
	}
	return false
}

func ports(f *flowpb.Flow) (src, dst string) {
	l4 := f.GetL4()
	switch {
	case l4.GetTCP() != nil:
		return strconv.Itoa(int(l4.GetTCP().GetSourcePort())), strconv.Itoa(int(l4.GetTCP().GetDestinationPort()))
	case l4.GetUDP() != nil:
		return strconv.Itoa(int(l4.GetUDP().GetSourcePort())), strconv.Itoa(int(l4.GetUDP().GetDestinationPort()))
	case l4.GetSCTP() != nil:
		return strconv.Itoa(int(l4.GetSCTP().GetSourcePort())), strconv.Itoa(int(l4.GetSCTP().GetDestinationPort()))
	}
	return "", ""
}
