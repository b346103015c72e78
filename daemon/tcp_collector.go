package daemon

// The TCP side of the daemon: reads the TCP probe every interval, attributes its per-cgroup
// counters to pods exactly as the DNS collector does (cgroup id → cgroup path → pod UID →
// Kubernetes pod; host cgroups are counted apart and never shown as a pod), and keeps each
// pod's totals and a short rate history.

import (
	"errors"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/isoobs/isoobs/bpf"
	"github.com/isoobs/isoobs/daemon/podmeta"
	"github.com/isoobs/isoobs/daemon/window"
	"github.com/isoobs/isoobs/hubble"
)

// TCPSource is what the TCP collector reads every tick: *bpf.TCPProbe in production.
type TCPSource interface {
	ReadTCP() (map[uint64]bpf.TCPCounters, error)
	Stats() (bpf.TCPStats, error)
	Attachments() []bpf.Attachment
	DeleteCgroups(ids []uint64) error
	// ReadDrops is the kfree_skb tracepoint's counts (the top drops view).
	ReadDrops() (map[bpf.DropKey]bpf.DropCounters, error)
	// ReadPeers is the (cgroup, peer) table; a source may also delete idle entries
	// (DeletePeers([]bpf.PeerKey) error).
	ReadPeers() (map[bpf.PeerKey]bpf.PeerCounters, error)
	Close() error
}

// tcpHistory bounds the rate history kept per pod: rates over longer windows are taken over
// this much (the frame's interval says so). A minute of 1 s ticks is 61 samples of 56 bytes.
const tcpHistory = time.Minute

// tcpWords views bpf.TCPCounters (only uint64 fields) as words, so adding and subtracting them
// has no per-field code to forget when a field is added.
const tcpWords = int(unsafe.Sizeof(bpf.TCPCounters{}) / 8)

func tcpWordsOf(c *bpf.TCPCounters) *[tcpWords]uint64 {
	return (*[tcpWords]uint64)(unsafe.Pointer(c))
}

func tcpAdd(dst, d *bpf.TCPCounters) {
	a, b := tcpWordsOf(dst), tcpWordsOf(d)
	for i := range a {
		a[i] += b[i]
	}
}

func tcpSub(dst, d *bpf.TCPCounters) {
	a, b := tcpWordsOf(dst), tcpWordsOf(d)
	for i := range a {
		a[i] -= b[i]
	}
}

// tcpDelta is cur - last; a counter that went down means the kernel entry was deleted and
// made again, and then cur is all new.
func tcpDelta(cur, last *bpf.TCPCounters) bpf.TCPCounters {
	a, b := tcpWordsOf(cur), tcpWordsOf(last)
	for i := range a {
		if a[i] < b[i] {
			return *cur
		}
	}
	d := *cur
	tcpSub(&d, last)
	return d
}

// tcpRate indexes the cumulative values a pod's rate history keeps.
const (
	tcpRateOpens = iota
	tcpRateFailures
	tcpRateResets
	tcpRateRetrans
	tcpRateBytesOut
	tcpRateBytesIn
	tcpRateSegsOut
	tcpRateDrops // dropped packets
	tcpRateLen
)

type tcpRate [tcpRateLen]uint64

func tcpRateOf(c *bpf.TCPCounters) tcpRate {
	return tcpRate{
		tcpRateOpens:    c.ActiveOpens + c.PassiveOpens,
		tcpRateFailures: c.ConnectRefused + c.ConnectTimeout + c.ConnectOther,
		tcpRateResets:   c.ResetsSent + c.ResetsReceived,
		tcpRateRetrans:  c.RetransSegs,
		tcpRateBytesOut: c.BytesOut,
		tcpRateBytesIn:  c.BytesIn,
		tcpRateSegsOut:  c.SegsOut,
	}
}

// tcpSubject is one row of pod granularity (a pod, all its cgroups), or a cgroup that could not
// be mapped to a path.
type tcpSubject struct {
	key, uid   string
	cgroupPath string
	cgroupID   uint64
	total      bpf.TCPCounters
	drops      map[uint32]bpf.DropCounters // by reason, since daemon start
	dropped    uint64                      // packets in drops
	series     *window.Series[tcpRate]
	meta       *podmeta.Pod
	cgroups    int
	goneAt     time.Time
	// peers is the pod's TCP events per peer since daemon start (at most maxPeersPerPod);
	// peersDropped counts events of peers past that bound.
	peers        map[peerID]bpf.PeerCounters
	peersDropped uint64
}

type tcpCgroup struct {
	last      bpf.TCPCounters
	lastDrops map[uint32]bpf.DropCounters
	subj      *tcpSubject
	host      bool
	goneAt    time.Time
}

type tcpCollector struct {
	cfg      *Config
	src      TCPSource
	resolver cgroupResolver
	pods     podLookup
	metrics  *tcpMetrics // nil: no Prometheus export

	mu       sync.RWMutex
	clock    *window.Clock
	cgroups  map[uint64]*tcpCgroup
	subjects map[string]*tcpSubject
	started  time.Time
	lastTick time.Time
	tickNo   uint64
	stats    bpf.TCPStats
	statsErr error
	readErr  error
	// Never silent about what is not shown: host cgroups' totals, pods past the tracking
	// limit, cgroups without a path.
	host, untracked                bpf.TCPCounters
	hostCgroups, untrackedPods     uint64
	unresolvedCgroups, readErrors  uint64
	subjectsDeleted, kernelDeleted uint64

	// Drops of packets without a socket (node-wide) and of host cgroups, by reason.
	noSocket, hostDrops, untrackedDrops map[uint32]bpf.DropCounters
	noSocketLast                        map[uint32]bpf.DropCounters

	// Socket-less drops by destination as last read, the index of this node's pod addresses
	// they are attributed by (podCgroups lists the pods' cgroups, nil: walk the root), and the
	// packets attributed that way or left out because two pods claimed the address;
	// dropDstsForgotten counts the idle entries deleted from the kernel table.
	dstLast                               map[bpf.DropDstKey]*dropDstLast
	dropDstsForgotten                     uint64
	podAddrs                              podAddrIndex
	podCgroups                            func(root string) map[string]uint64
	dropsByAddress, dropsAmbiguousAddress uint64

	// Where drops happened, node-wide, by kernel function and reason (since daemon start),
	// and the kernel's location entries as last read.
	dropLocations map[dropLocation]uint64
	locationLast  map[bpf.DropLocationKey]uint64

	// The kernel's peer entries as last read; how many idle ones were deleted.
	peerLast       map[bpf.PeerKey]*peerLast
	peersForgotten uint64

	subscribers map[chan struct{}]struct{}

	// hubble returns Hubble's aggregates (nil: none), whose per-pod drops top drops merges.
	hubble func() *hubble.Aggregator
}

func newTCPCollector(cfg *Config, src TCPSource, res cgroupResolver, pods podLookup, now time.Time) *tcpCollector {
	ticks := int(min(cfg.Retention, tcpHistory)/cfg.Interval) + 1
	return &tcpCollector{
		cfg: cfg, src: src, resolver: res, pods: pods,
		clock:       window.NewClock(max(ticks, 2)),
		cgroups:     map[uint64]*tcpCgroup{},
		subjects:    map[string]*tcpSubject{},
		started:     now,
		subscribers: map[chan struct{}]struct{}{},
		noSocket:    map[uint32]bpf.DropCounters{}, hostDrops: map[uint32]bpf.DropCounters{},
		untrackedDrops: map[uint32]bpf.DropCounters{}, noSocketLast: map[uint32]bpf.DropCounters{},
		peerLast:      map[bpf.PeerKey]*peerLast{},
		dstLast:       map[bpf.DropDstKey]*dropDstLast{},
		dropLocations: map[dropLocation]uint64{}, locationLast: map[bpf.DropLocationKey]uint64{},
	}
}

// run ticks every interval until done is closed.
func (c *tcpCollector) run(done <-chan struct{}) {
	c.tick(time.Now())
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			c.tick(now)
		}
	}
}

func (c *tcpCollector) tick(now time.Time) {
	cur, readErr := c.src.ReadTCP()
	drops, dropErr := c.src.ReadDrops()
	peers, peerErr := c.src.ReadPeers()
	var locations map[bpf.DropLocationKey]uint64
	var locErr error
	if ls, ok := c.src.(interface {
		ReadDropLocations() (map[bpf.DropLocationKey]uint64, error)
	}); ok {
		locations, locErr = ls.ReadDropLocations()
	}
	var dsts map[bpf.DropDstKey]bpf.DropCounters
	var dstErr error
	if ds, ok := c.src.(DropDstSource); ok {
		dsts, dstErr = ds.ReadDropDestinations()
	}
	readErr = errors.Join(readErr, dropErr, peerErr, locErr, dstErr)
	c.mu.Lock()
	tick := c.clock.Tick(now)
	c.tickNo, c.lastTick, c.readErr = tick, now, readErr
	if readErr != nil {
		c.readErrors++
	}
	for id, v := range cur {
		e := c.entry(id)
		d := tcpDelta(&v, &e.last)
		e.last = v
		switch {
		case e.subj != nil:
			tcpAdd(&e.subj.total, &d)
			if c.metrics != nil && d != (bpf.TCPCounters{}) {
				c.metrics.observe(e.subj, &d, tick)
			}
		case e.host:
			tcpAdd(&c.host, &d)
		default:
			tcpAdd(&c.untracked, &d)
		}
	}
	c.addDrops(drops)
	c.addDropDsts(dsts, now)
	c.addDropLocations(locations)
	c.addPeers(peers, now)
	for _, s := range c.subjects {
		r := tcpRateOf(&s.total)
		r[tcpRateDrops] = s.dropped
		s.series.Set(tick, r)
		c.lookupMeta(s)
	}
	if tick%uint64(c.cfg.statsEvery()) == 0 {
		c.stats, c.statsErr = c.src.Stats()
	}
	if tick%uint64(c.cfg.gcEvery()) == 0 {
		c.collectGarbage(now)
		c.forgetIdlePeers(now)
		c.forgetIdleDropDsts(now)
		if c.metrics != nil {
			c.metrics.expire(tick, uint64(c.cfg.Retention/c.cfg.Interval))
		}
	}
	subs := make([]chan struct{}, 0, len(c.subscribers))
	for ch := range c.subscribers {
		subs = append(subs, ch)
	}
	c.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default: // a slow stream skips a tick rather than blocking the collector
		}
	}
}

// entry finds or creates a cgroup's state, resolving it to a pod on creation. Callers hold mu.
func (c *tcpCollector) entry(id uint64) *tcpCgroup {
	if e := c.cgroups[id]; e != nil {
		return e
	}
	e := &tcpCgroup{}
	c.cgroups[id] = e
	cg, ok := c.resolver.Resolve(id)
	var key, uid, path string
	switch {
	case ok && cg.Pod != nil:
		key, uid, path = cg.Pod.UID, cg.Pod.UID, cg.Pod.PodPath
	case ok:
		// A host process (a cgroup that is no pod's): counted apart, never a row.
		e.host = true
		c.hostCgroups++
		return e
	default:
		c.unresolvedCgroups++
		key = "cgroup:" + strconv.FormatUint(id, 10)
	}
	s := c.subjects[key]
	if s == nil {
		if len(c.subjects) >= c.cfg.MaxTrackedPods {
			c.untrackedPods++
			return e
		}
		s = &tcpSubject{key: key, uid: uid, cgroupPath: path, cgroupID: id,
			series: window.NewSeries[tcpRate](c.clock.Len(), c.tickNo)}
		c.subjects[key] = s
		c.lookupMeta(s)
	}
	s.cgroups++
	s.goneAt = time.Time{}
	e.subj = s
	return e
}

func (c *tcpCollector) lookupMeta(s *tcpSubject) {
	if s.meta != nil || s.uid == "" || c.pods == nil {
		return
	}
	if p, ok := c.pods.Lookup(s.uid); ok {
		s.meta = &p
	}
}

// collectGarbage forgets cgroups whose directory is gone (and their kernel entries) and, after
// the retention, pods without any cgroup left: memory and the kernel map stay bounded.
func (c *tcpCollector) collectGarbage(now time.Time) {
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
		}
	}
	if len(forget) > 0 && c.src.DeleteCgroups(forget) == nil {
		c.kernelDeleted += uint64(len(forget))
	}
	for key, s := range c.subjects {
		if s.cgroups <= 0 && !s.goneAt.IsZero() && now.Sub(s.goneAt) >= c.cfg.Retention {
			delete(c.subjects, key)
			c.subjectsDeleted++
		}
	}
}

func (c *tcpCollector) subscribeAtMost(limit int) (chan struct{}, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if limit > 0 && len(c.subscribers) >= limit {
		return nil, false
	}
	ch := make(chan struct{}, 1)
	c.subscribers[ch] = struct{}{}
	return ch, true
}

func (c *tcpCollector) unsubscribe(ch chan struct{}) {
	c.mu.Lock()
	delete(c.subscribers, ch)
	c.mu.Unlock()
}
