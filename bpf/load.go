package bpf

import (
	"fmt"
	"math/bits"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/isoobs/isoobs/cgroupv2"
)

// LoadDNS loads the DNS probe and attaches its egress and ingress programs
// to opts.CgroupRoot. Errors name what is missing (capability, BTF, cgroup
// root) and what to do.
func LoadDNS(opts Options) (*DNSProbe, error) {
	if err := cgroupv2.Check(opts.CgroupRoot); err != nil {
		return nil, err
	}
	// Only kernels before 5.11 account BPF memory to RLIMIT_MEMLOCK; raising
	// it is harmless elsewhere, and failure is reported by the loads below.
	_ = rlimit.RemoveMemlock()

	spec, err := loadDns()
	if err != nil {
		return nil, fmt.Errorf("dns probe: read embedded object: %w", err)
	}
	return loadDNSSpec(spec, opts)
}

// LoadDNSObject is LoadDNS with the probe read from an object file built from
// dns.c instead of the embedded one: benchmarks compare builds of the probe
// (earlier versions, parts compiled out) under the same load.
func LoadDNSObject(path string, opts Options) (*DNSProbe, error) {
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return nil, fmt.Errorf("dns probe: read %s: %w", path, err)
	}
	// An earlier build may lack maps added since: they are created unused
	// so that the objects struct fills.
	cur, err := loadDns()
	if err != nil {
		return nil, err
	}
	for name, m := range cur.Maps {
		if _, ok := spec.Maps[name]; !ok {
			spec.Maps[name] = m
		}
	}
	return loadDNSSpec(spec, opts)
}

// loadDNSSpec loads and attaches the probe from spec, an object with the
// maps and programs of dns.c (benchmarks also load earlier versions of it).
func loadDNSSpec(spec *ebpf.CollectionSpec, opts Options) (*DNSProbe, error) {
	var maps dnsMapSpecs
	if err := spec.Assign(&maps); err != nil {
		return nil, fmt.Errorf("dns probe: %w", err)
	}
	slotCopies, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("dns probe: %w", err)
	}
	if err := sizeMaps(spec, &maps, &opts, slotCopies); err != nil {
		return nil, err
	}
	p := &DNSProbe{opts: opts, slotOwner: make([]uint64, opts.PodSlots), slotDirty: make([]bool, opts.PodSlots),
		slotShift: make([]uint32, opts.PodSlots), slotQueries: make([]uint64, opts.PodSlots),
		slotPrevShift: make([]uint32, opts.PodSlots), slotShiftAt: make([]time.Time, opts.PodSlots),
		timeouts: make(map[uint64]uint64)}
	if err := p.createInnerTables(&maps, slotCopies); err != nil {
		p.Close()
		return nil, err
	}
	// Programs and maps only: the variables are set in the spec above, and
	// a build from before a variable was added still loads.
	if err := spec.LoadAndAssign(&struct {
		*dnsPrograms
		*dnsMaps
	}{&p.objs.dnsPrograms, &p.objs.dnsMaps}, nil); err != nil {
		p.Close()
		return nil, explainLoadError("load dns programs", err)
	}
	if !opts.Chained {
		if err := p.attach(); err != nil {
			p.Close()
			return nil, err
		}
	}
	if !opts.NoEarlyDrain {
		p.stopEarlyDrain = make(chan struct{})
		p.earlyDrainDone = make(chan struct{})
		go p.earlyDrainLoop()
	}
	return p, nil
}

// sizeMaps fills opts' defaults, rounds the table sizes to what the programs
// index with a mask, and writes the sizes and masks into the spec.
func sizeMaps(spec *ebpf.CollectionSpec, maps *dnsMapSpecs, opts *Options, slotCopies int) error {
	for _, d := range []struct {
		v   *uint32
		def uint32
	}{
		{&opts.MaxPods, DefaultMaxPods}, {&opts.MaxNames, DefaultMaxNames},
		{&opts.MaxInflight, DefaultMaxInflight}, {&opts.PodSlots, DefaultPodSlots},
		{&opts.NameSlots, defaultNameSlots(slotCopies)}, {&opts.LatencySampleAbove, DefaultLatencySampleAbove},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	maps.PodStats.MaxEntries = opts.MaxPods
	opts.PodSlots = 1 << bits.Len32(opts.PodSlots-1)
	maps.PodSlotOwner.MaxEntries = opts.PodSlots
	maps.PodSlotCounters.MaxEntries = opts.PodSlots

	// The inflight table holds sets of inflightWays slots indexed by
	// hash & mask: round the set count up to a power of two. The set index
	// must stay below the hash bits that pick the sampled queries (54+).
	if opts.MaxInflight > maxInflight {
		return fmt.Errorf("dns probe: %d in-flight query slots is more than the %d supported", opts.MaxInflight, maxInflight)
	}
	sets := uint32(1) << bits.Len32((opts.MaxInflight+inflightWays-1)/inflightWays-1)
	opts.MaxInflight = sets * inflightWays
	maps.Inflight.MaxEntries = sets
	maps.InflightEvicted.MaxEntries = sets
	maps.ServerInflight.MaxEntries = sets
	if opts.DNSTimeout == 0 {
		opts.DNSTimeout = DefaultDNSTimeout
	}
	if opts.DNSTimeout < time.Millisecond || opts.DNSTimeout > maxDNSTimeout {
		return fmt.Errorf("dns probe: a DNS timeout of %v is outside 1ms..%v", opts.DNSTimeout, maxDNSTimeout)
	}

	if opts.NameSlots > maxNameSlots {
		return fmt.Errorf("dns probe: %d name slots is more than the %d supported", opts.NameSlots, maxNameSlots)
	}
	opts.NameSlots = 1 << bits.Len32(opts.NameSlots-1)
	maps.NameSlotTables.InnerMap.MaxEntries = opts.NameSlots
	maps.NameTables.InnerMap.MaxEntries = opts.MaxNames

	// Variables by name, not through dnsVariableSpecs: the masks of the fast
	// path and the name slots are absent from the earlier builds that
	// benchmarks load (LoadDNSObject).
	for _, v := range []struct {
		name     string
		value    uint32
		optional bool
	}{
		{"inflight_mask", sets - 1, false},
		{"pod_slot_mask", opts.PodSlots - 1, true},
		{"name_slot_mask", opts.NameSlots - 1, true},
	} {
		vs := spec.Variables[v.name]
		if vs == nil && v.optional {
			continue
		}
		if vs == nil {
			return fmt.Errorf("dns probe: the object has no variable %s", v.name)
		}
		if err := vs.Set(v.value); err != nil {
			return fmt.Errorf("dns probe: set %s: %w", v.name, err)
		}
	}
	if vs := spec.Variables["dns_timeout_ns"]; vs != nil { // absent from earlier builds
		if err := vs.Set(uint64(opts.DNSTimeout)); err != nil {
			return fmt.Errorf("dns probe: set dns_timeout_ns: %w", err)
		}
	}
	return nil
}

// createInnerTables creates the two name tables the programs and DrainNames
// swap, and the per-CPU copies of the name slots, and makes the first of
// each the outer maps' initial content.
func (p *DNSProbe) createInnerTables(maps *dnsMapSpecs, slotCopies int) error {
	for i := range p.nameTables {
		inner := maps.NameTables.InnerMap.Copy()
		inner.Name = fmt.Sprintf("dns_names_%d", i)
		m, err := ebpf.NewMap(inner)
		if err != nil {
			return explainLoadError("create name table", err)
		}
		p.nameTables[i] = m
	}
	maps.NameTables.Contents = []ebpf.MapKV{{Key: uint32(0), Value: p.nameTables[0]}}
	p.slots = newNameSlots(p.opts.NameSlots, slotCopies)
	for i := range p.slots.tables {
		inner := maps.NameSlotTables.InnerMap.Copy()
		inner.Name = fmt.Sprintf("dns_slots_%d", i)
		m, err := ebpf.NewMap(inner)
		if err != nil {
			return explainLoadError("create name slots", err)
		}
		p.slots.tables[i] = m
	}
	maps.NameSlotTables.Contents = []ebpf.MapKV{{Key: uint32(0), Value: p.slots.tables[0]}}
	return nil
}

// attach links the egress and ingress programs to the cgroup root.
func (p *DNSProbe) attach() error {
	for _, a := range []struct {
		name string
		hook string
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{
		{"dns_egress", "cgroup_skb/egress", p.objs.DnsEgress, ebpf.AttachCGroupInetEgress},
		{"dns_ingress", "cgroup_skb/ingress", p.objs.DnsIngress, ebpf.AttachCGroupInetIngress},
	} {
		// AttachCgroup uses bpf_link (or BPF_F_ALLOW_MULTI on old kernels), so
		// probes on nested or sibling roots and other tools' programs coexist.
		l, err := link.AttachCgroup(link.CgroupOptions{Path: p.opts.CgroupRoot, Attach: a.typ, Program: a.prog})
		att := Attachment{Program: a.name, Hook: a.hook, Target: p.opts.CgroupRoot}
		if err != nil {
			att.Err = explainLoadError(fmt.Sprintf("attach %s to %s", a.hook, p.opts.CgroupRoot), err)
			p.attachments = append(p.attachments, att)
			return att.Err
		}
		p.links = append(p.links, l)
		p.attachments = append(p.attachments, att)
	}
	return nil
}
