package daemon

import (
	"strconv"
	"sync"
	"time"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/daemon/podmeta"
	"github.com/isoobs/isoobs/daemon/podresolver"
	"github.com/isoobs/isoobs/daemon/window"
)

// Source is what the collector reads every tick: the DNS probe (*bpf.DNSProbe) in production.
type Source interface {
	ReadPods() (map[uint64]bpf.PodCounters, error)
	DrainNames(fn func(cgroupID uint64, name string, queries, nxdomain uint64)) error
	Stats() (bpf.ProbeStats, error)
	Attachments() []bpf.Attachment
	Close() error
}

// podDeleter is implemented by sources that can drop the kernel entries of vanished cgroups
// (otherwise a non-LRU kernel map fills up with dead pods).
type podDeleter interface {
	DeletePods(ids []uint64) error
}

// cgroupResolver maps cgroup ids to paths; *podresolver.Resolver.
type cgroupResolver interface {
	Resolve(id uint64) (podresolver.Cgroup, bool)
	Exists(id uint64) bool
	Forget(id uint64)
}

// podLookup finds pod metadata by UID; *podmeta.Watcher.
type podLookup interface {
	Lookup(uid string) (podmeta.Pod, bool)
}

// cgroupEntry is one kernel counter entry (one cgroup: a pod's or a container's).
type cgroupEntry struct {
	last        counters // last cumulative read, to compute deltas
	lastServers []bpf.ServerCounters
	subj        *subject // nil for host cgroups and pods over the tracking limit
	host        bool
	goneAt      time.Time // when the cgroup directory was found missing; zero while it exists
}

// subject is one row of pod granularity: a pod (all its cgroups) or, when the cgroup id cannot
// be mapped to a path any more, that cgroup alone.
type subject struct {
	key        string // pod UID, or "cgroup:<id>"
	uid        string
	cgroupPath string
	cgroupID   uint64
	total      counters  // since daemon start
	servers    serverSet // the servers the pod's queries went to, since daemon start
	series     *window.Series[rateSample]
	names      *nameSummary
	meta       *podmeta.Pod
	cgroups    int       // live cgroup entries pointing here
	goneAt     time.Time // when the last cgroup vanished
	// hub is set on subjects that stand for a pod Hubble reports (see hubble.go); peer links an
	// eBPF subject and the Hubble subject of the same pod.
	hub  *hubbleInfo
	peer *subject
	// metricsKey is the (namespace, workload) the subject's deltas were exported under.
	metricsNS, metricsWorkload string
}

// nameSink receives name deltas for a stream that counts since its own start.
type nameSink struct {
	perSubject map[string]*nameSummary
	node       *nameSummary
	capacity   int
	maxSubject int
	// filter, when set, keeps only matching names; matched then counts them per subject
	// (names.go), with the collector's clock for their rates.
	filter  *nameFilter
	matched map[string]*matchedNames
	clock   *window.Clock
}

func newNameSink(perPod, node, maxSubjects int) *nameSink {
	return &nameSink{perSubject: map[string]*nameSummary{}, node: newNameSummary(node), capacity: perPod, maxSubject: maxSubjects}
}

func (s *nameSink) add(key, name string, q, nx uint64) {
	s.addName(key, drainedNameOf(name, zoneOf(name)), q, nx)
}

func (s *nameSink) addName(key string, name drainedName, q, nx uint64) {
	if s.filter != nil {
		if !s.filter.match(name.name) {
			return
		}
		s.count(key, q, nx)
	}
	ss := s.perSubject[key]
	if ss == nil {
		if len(s.perSubject) >= s.maxSubject {
			return
		}
		ss = newNameSummary(s.capacity)
		s.perSubject[key] = ss
	}
	ss.addName(name, q, nx)
	s.node.addName(name, q, nx)
}

// collector owns all per-pod state. Ticks take the write lock; frames and status the read lock.
type collector struct {
	cfg      *Config
	src      Source
	resolver cgroupResolver
	pods     podLookup
	metrics  *metrics

	mu        sync.RWMutex
	clock     *window.Clock
	cgroups   map[uint64]*cgroupEntry
	subjects  map[string]*subject
	nodeNames *nameSummary
	zones     zoneCache // parents of drained names, built once
	sinks     map[*nameSink]struct{}
	started   time.Time // counting since
	lastTick  time.Time
	tickNo    uint64
	stats     bpf.ProbeStats
	statsErr  error
	readErr   error
	// Status counters (never silent about what is not shown).
	hostQueries         uint64 // queries from cgroups that are not pods
	hostCgroups         uint64
	untrackedQueries    uint64 // queries of pods beyond MaxTrackedPods
	untrackedPods       uint64
	unresolvedCgroups   uint64 // cgroup ids whose path could not be found
	droppedNameQueries  uint64 // name increments for cgroups not tracked
	readErrors          uint64
	subjectsDeleted     uint64
	kernelEntriesForgot uint64

	subscribers map[chan struct{}]struct{}

	// hub merges Hubble's flows; nil when Hubble is off.
	hub *hubbleFeed
}

func newCollector(cfg *Config, src Source, res cgroupResolver, pods podLookup, m *metrics, now time.Time) *collector {
	return &collector{
		cfg: cfg, src: src, resolver: res, pods: pods, metrics: m,
		clock:       window.NewTieredClock(window.LayoutFor(cfg.Interval, cfg.Retention)),
		cgroups:     map[uint64]*cgroupEntry{},
		subjects:    map[string]*subject{},
		nodeNames:   newNameSummary(cfg.NamesPerNode),
		zones:       zoneCache{},
		sinks:       map[*nameSink]struct{}{},
		subscribers: map[chan struct{}]struct{}{},
		started:     now,
	}
}

// tick reads the probe once and advances every series.
func (c *collector) tick(now time.Time) {
	readStart := time.Now()
	pods, readErr := c.src.ReadPods()
	c.mu.Lock()
	tick := c.clock.Tick(now)
	c.tickNo = tick
	c.lastTick = now
	c.readErr = readErr
	if readErr != nil {
		c.readErrors++
	}
	for id := range pods {
		pc := pods[id]
		cur := fromBPF(&pc)
		e := c.entry(id, now)
		d := deltaSince(&cur, &e.last)
		e.last = cur
		prevServers := e.lastServers
		e.lastServers = pc.Servers
		switch {
		case e.subj != nil:
			e.subj.total.add(&d)
			serverDeltas(&e.subj.servers, pc.Servers, prevServers)
		case e.host:
			c.hostQueries += d.Queries
		default:
			c.untrackedQueries += d.Queries
		}
	}
	// Names are drained after the counters so a cgroup's first names find its entry.
	drainErr := c.src.DrainNames(func(id uint64, name string, q, nx uint64) {
		e := c.entry(id, now)
		if e.subj == nil {
			c.droppedNameQueries += q
			return
		}
		k := c.zones.key(name)
		e.subj.names.addName(k, q, nx)
		c.nodeNames.addName(k, q, nx)
		for s := range c.sinks {
			s.addName(e.subj.key, k, q, nx)
		}
	})
	if drainErr != nil && c.readErr == nil {
		c.readErr = drainErr
		c.readErrors++
	}
	c.tickHubble(tick)
	for _, s := range c.subjects {
		s.series.Set(tick, s.total.rateSample())
		c.lookupMeta(s)
	}
	if c.metrics != nil {
		c.metrics.observeTick(c)
	}
	if tick%uint64(c.cfg.statsEvery()) == 0 {
		c.stats, c.statsErr = c.src.Stats()
	}
	if tick%uint64(c.cfg.gcEvery()) == 0 {
		c.collectGarbage(now)
		c.gcHubble(now)
	}
	subs := make([]chan struct{}, 0, len(c.subscribers))
	for ch := range c.subscribers {
		subs = append(subs, ch)
	}
	c.mu.Unlock()
	if c.metrics != nil {
		c.metrics.readDuration.Observe(time.Since(readStart).Seconds())
	}
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default: // a slow stream skips a tick rather than blocking the collector
		}
	}
}

// entry finds or creates the state of a cgroup id, resolving it to a pod on creation.
func (c *collector) entry(id uint64, now time.Time) *cgroupEntry {
	if e := c.cgroups[id]; e != nil {
		return e
	}
	e := &cgroupEntry{}
	c.cgroups[id] = e
	cg, ok := c.resolver.Resolve(id)
	var key, uid, path string
	switch {
	case ok && cg.Pod != nil:
		key, uid, path = cg.Pod.UID, cg.Pod.UID, cg.Pod.PodPath
	case ok:
		e.host = true
		c.hostCgroups++
		return e
	default:
		c.unresolvedCgroups++
		key = "cgroup:" + strconv.FormatUint(id, 10)
	}
	s := c.subjects[key]
	if s == nil {
		if c.ebpfSubjects() >= c.cfg.MaxTrackedPods {
			c.untrackedPods++
			return e
		}
		s = &subject{
			key: key, uid: uid, cgroupPath: path, cgroupID: id,
			series: window.NewSeriesLayout[rateSample](c.clock.Layout(), c.tickNo),
			names:  newNameSummary(c.cfg.NamesPerPod),
		}
		c.subjects[key] = s
		c.lookupMeta(s)
	}
	s.cgroups++
	s.goneAt = time.Time{}
	e.subj = s
	return e
}

func (c *collector) lookupMeta(s *subject) {
	// A pod's IPs may reach its status after the daemon first saw it: look again until then.
	if (s.meta != nil && len(s.meta.IPs) > 0) || s.uid == "" || c.pods == nil {
		return
	}
	if p, ok := c.pods.Lookup(s.uid); ok {
		s.meta = &p
	}
}

// collectGarbage forgets cgroups whose directory is gone and, after the retention window,
// the pods that no longer have any cgroup: memory stays bounded as pods come and go.
func (c *collector) collectGarbage(now time.Time) {
	var forget []uint64
	for id, e := range c.cgroups {
		if e.goneAt.IsZero() {
			if !c.resolver.Exists(id) {
				e.goneAt = now
				if e.subj != nil {
					e.subj.cgroups--
					if e.subj.cgroups <= 0 {
						e.subj.goneAt = now
					}
				}
			}
			continue
		}
		if now.Sub(e.goneAt) >= c.cfg.Retention {
			forget = append(forget, id)
			delete(c.cgroups, id)
			c.resolver.Forget(id)
		}
	}
	if len(forget) > 0 {
		if d, ok := c.src.(podDeleter); ok {
			if err := d.DeletePods(forget); err == nil {
				c.kernelEntriesForgot += uint64(len(forget))
			}
		}
	}
	for key, s := range c.subjects {
		if s.cgroups <= 0 && !s.goneAt.IsZero() && now.Sub(s.goneAt) >= c.cfg.Retention {
			delete(c.subjects, key)
			c.subjectsDeleted++
			for sink := range c.sinks {
				delete(sink.perSubject, key)
			}
		}
	}
}

func (c *collector) subscribe() chan struct{} {
	ch, _ := c.subscribeAtMost(0)
	return ch
}

// subscribeAtMost is subscribe unless max (> 0) subscribers are there already; ok false then.
func (c *collector) subscribeAtMost(max int) (ch chan struct{}, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if max > 0 && len(c.subscribers) >= max {
		return nil, false
	}
	ch = make(chan struct{}, 1)
	c.subscribers[ch] = struct{}{}
	return ch, true
}

func (c *collector) unsubscribe(ch chan struct{}) {
	c.mu.Lock()
	delete(c.subscribers, ch)
	c.mu.Unlock()
}

func (c *collector) addSink(s *nameSink) {
	c.mu.Lock()
	c.sinks[s] = struct{}{}
	c.mu.Unlock()
}

func (c *collector) removeSink(s *nameSink) {
	c.mu.Lock()
	delete(c.sinks, s)
	c.mu.Unlock()
}
