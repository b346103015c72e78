package daemon

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/isoobs/isoobs/bpf"
	isoobsv1 "github.com/isoobs/isoobs/proto/isoobs/v1"
)

// floodSource emits a DNS flood of unique names: each tick, every pod sends perTick queries,
// one per never-seen name, plus heavyPerTick queries for one constant name.
type floodSource struct {
	fakeSource
	ids          []uint64
	perTick      int
	heavyPerTick int
	next         uint64
	batch        map[uint64]int // names to emit per pod in the pending drain
	sent         map[uint64]uint64
	batches      int
}

func newFloodSource(ids []uint64, perTick, heavy int) *floodSource {
	f := &floodSource{fakeSource: *newFakeSource(), ids: ids, perTick: perTick, heavyPerTick: heavy, batch: map[uint64]int{}, sent: map[uint64]uint64{}}
	return f
}

func (f *floodSource) ReadPods() (map[uint64]bpf.PodCounters, error) {
	out := make(map[uint64]bpf.PodCounters, len(f.ids))
	f.batches++
	for _, id := range f.ids {
		n := uint64(f.perTick + f.heavyPerTick)
		f.sent[id] += n
		f.batch[id] = f.perTick
		out[id] = bpf.PodCounters{Queries: f.sent[id], Responses: f.sent[id], Rcode: [bpf.NumRcodeSlots]uint64{bpf.RcodeNXDomain: f.sent[id]}}
	}
	return out, nil
}

func (f *floodSource) DrainNames(fn func(uint64, string, uint64, uint64)) error {
	buf := make([]byte, 0, 64)
	for _, id := range f.ids {
		for range f.batch[id] {
			f.next++
			buf = append(buf[:0], 'r')
			buf = strconv.AppendUint(buf, f.next, 36)
			buf = append(buf, ".flood.example.com."...)
			fn(id, string(buf), 1, 1)
		}
		if f.heavyPerTick > 0 {
			fn(id, "heavy.example.com.", uint64(f.heavyPerTick), uint64(f.heavyPerTick))
		}
		f.batch[id] = 0
	}
	return nil
}

func vmHWMKiB() uint64 {
	fh, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

type floodResult struct {
	Names       uint64 `json:"names"`
	PeakRSSKiB  uint64 `json:"peak_rss_kib"`
	HeapInUse   uint64 `json:"heap_inuse"`
	TotalsExact bool   `json:"totals_exact"`
	HeavyTop    bool   `json:"heavy_top"`
	ErrorBound  bool   `json:"error_bound"`
	Detail      string `json:"detail"`
}

const floodChildEnv = "ISOOBS_DAEMON_FLOOD_CHILD"

// TestNameFloodBoundedMemory floods the collector with 10 million unique query names (three
// pods, 100k names per tick) and checks, in a fresh process so nothing else inflates the
// figure, that peak RSS stays within 64 MiB while per-pod totals stay exact and the heavy
// hitter hidden in the flood is still on top.
func TestNameFloodBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-minute flood with a memory bound -race cannot hold: not under -short (make unit)")
	}
	if os.Getenv(floodChildEnv) != "" {
		res := runFlood(t, 10_000_000)
		_ = json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestNameFloodBoundedMemory$")
	cmd.Env = append(os.Environ(), floodChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("flood child: %v\n%s", err, out)
	}
	var res floodResult
	line := out
	if i := strings.IndexByte(string(out), '{'); i >= 0 {
		line = out[i:]
		if j := strings.IndexByte(string(line), '\n'); j >= 0 {
			line = line[:j]
		}
	}
	if err := json.Unmarshal(line, &res); err != nil {
		t.Fatalf("flood child output %q: %v", out, err)
	}
	t.Logf("flood: %d unique names, peak RSS %.1f MiB, heap in use %.1f MiB", res.Names, float64(res.PeakRSSKiB)/1024, float64(res.HeapInUse)/(1<<20))
	if res.Names < 10_000_000 {
		t.Errorf("only %d names sent", res.Names)
	}
	if res.PeakRSSKiB == 0 || res.PeakRSSKiB > 64*1024 {
		t.Errorf("peak RSS %d KiB, want <= 64 MiB", res.PeakRSSKiB)
	}
	if !res.TotalsExact || !res.HeavyTop || !res.ErrorBound {
		t.Errorf("flood accuracy: %+v", res)
	}
}

func runFlood(t testing.TB, names int) floodResult {
	const perTick = 100_000
	ids := []uint64{101, 201, 301}
	f := newFixture(t, nil)
	src := newFloodSource(ids, perTick/len(ids), 2000)
	f.c.src = src
	f.c.tick(f.now)
	ticks := names / (perTick / len(ids) * len(ids))
	for range ticks {
		f.step()
	}
	fr := f.frame(t, &isoobsv1.TopRequest{TopNames: 5, Window: isoobsv1.Window_WINDOW_10S})
	res := floodResult{Names: src.next, TotalsExact: true, HeavyTop: true, ErrorBound: true}
	for _, id := range ids {
		s := f.c.cgroups[id].subj
		if s.total.Queries != src.sent[id] || s.names.names.Total() != src.sent[id] || s.total.Rcode[bpf.RcodeNXDomain] != src.sent[id] {
			res.TotalsExact = false
			res.Detail += "totals differ for " + strconv.FormatUint(id, 10) + "; "
		}
	}
	for _, r := range fr.Rows {
		// No random name ranks, but their parent does, exactly: every name was counted there.
		if len(r.TopZones) == 0 || r.TopZones[0].Name != "*.flood.example.com." ||
			r.TopZones[0].Queries != uint64(src.perTick*src.batches) || r.TopZones[0].Error != 0 {
			res.TotalsExact = false
			res.Detail += fmt.Sprintf("top zone %v, want *.flood.example.com. = %d exactly; ", r.TopZones, src.perTick*src.batches)
		}
		if len(r.TopNames) == 0 || r.TopNames[0].Name != "heavy.example.com." {
			res.HeavyTop = false
			continue
		}
		// The heavy name was sent 2000 per tick: its estimate must bracket the truth.
		h := r.TopNames[0]
		truth := uint64(src.heavyPerTick * src.batches)
		if h.Queries < truth || h.Queries-h.Error > truth {
			res.ErrorBound = false
			res.Detail += "heavy estimate off; "
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapInUse = ms.HeapInuse
	res.PeakRSSKiB = vmHWMKiB()
	return res
}

// BenchmarkCollectorTick measures one collector tick with many pods and names: 1000 pods
// (in 2000 cgroups) each sending 20 names per tick, all kept for 5 minutes of history.
func BenchmarkCollectorTick(b *testing.B) {
	for _, tc := range []struct {
		name        string
		pods        int
		namesPerPod int
	}{{"pods=100/names=20", 100, 20}, {"pods=1000/names=20", 1000, 20}, {"pods=1000/names=200", 1000, 200}} {
		b.Run(tc.name, func(b *testing.B) {
			f := newFixture(b, func(c *Config) { c.MaxTrackedPods = 2048 })
			f.res.paths = map[uint64]string{}
			ids := make([]uint64, 0, tc.pods*2)
			for p := range tc.pods {
				uid := strings.Replace("00000000-0000-4000-8000-000000000000", "00000000", strconv.FormatUint(uint64(10000000+p), 10)[:8], 1)
				for c := range 2 {
					id := uint64(p*2 + c + 1)
					f.res.paths[id] = systemdPod(uid) + "/cri-containerd-" + strconv.Itoa(c) + ".scope"
					ids = append(ids, id)
				}
			}
			src := newFloodSource(ids, tc.namesPerPod/2, 10)
			f.c.src = src
			f.c.tick(f.now)
			// Warm up past the ring length so every series is full.
			for range 310 {
				f.step()
			}
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				f.step()
			}
			b.StopTimer()
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heapMiB")
			b.ReportMetric(float64(vmHWMKiB())/1024, "peakRSSMiB")
			runtime.KeepAlive(f)
		})
	}
}

// BenchmarkFrame measures building one Top frame over 1000 pods.
func BenchmarkFrame(b *testing.B) {
	f := newFixture(b, func(c *Config) { c.MaxTrackedPods = 2048 })
	f.res.paths = map[uint64]string{}
	var ids []uint64
	for p := range 1000 {
		uid := strings.Replace("00000000-0000-4000-8000-000000000000", "00000000", strconv.FormatUint(uint64(10000000+p), 10)[:8], 1)
		id := uint64(p + 1)
		f.res.paths[id] = systemdPod(uid)
		ids = append(ids, id)
	}
	f.c.src = newFloodSource(ids, 20, 10)
	f.c.tick(f.now)
	for range 20 {
		f.step()
	}
	for _, by := range []isoobsv1.GroupBy{isoobsv1.GroupBy_GROUP_BY_POD, isoobsv1.GroupBy_GROUP_BY_NAMESPACE, isoobsv1.GroupBy_GROUP_BY_QNAME} {
		b.Run(by.String(), func(b *testing.B) {
			q, _ := newTopQuery(&isoobsv1.TopRequest{GroupBy: by, TopNames: 5, Limit: 20}, time.Second)
			b.ReportAllocs()
			for b.Loop() {
				f.c.frame(q)
			}
		})
	}
}
