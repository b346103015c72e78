// Command isoobs-lab runs the local incident lab by hand: a real control plane with kwok nodes
// whose pods have real network namespaces and cgroups on this host, CoreDNS, and optionally the
// seed 000 app.
//
//	isoobs-lab up [--foreground] [--id lab] [--nodes a,b,c] [--scenario]
//	isoobs-lab status
//	isoobs-lab down [--id lab | --all]
//
// State lives in /run/isoobs-lab-up/<id>/ (state.json, lab.log, the control plane's files).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/isoobs/isoobs/testlab"
	"github.com/isoobs/isoobs/testlab/podnet"
	"github.com/isoobs/isoobs/testlab/realnode"
	"github.com/isoobs/isoobs/testlab/scenario"
)

// StateRoot holds one directory per lab started by `up`.
const StateRoot = "/run/isoobs-lab-up"

// state is what `up` records for `status` and `down`.
type state struct {
	ID                   string   `json:"id"`
	PID                  int      `json:"pid"`
	Kubeconfig           string   `json:"kubeconfig"`
	RestrictedKubeconfig string   `json:"restrictedKubeconfig"`
	APIServer            string   `json:"apiServer"`
	Nodes                []string `json:"nodes"`
	CgroupRoot           string   `json:"cgroupRoot"`
	DNSServiceIP         string   `json:"dnsServiceIP"`
	NetIndex             int      `json:"netIndex"`
	Scenario             bool     `json:"scenario"`
	Started              string   `json:"started"`
}

func stateDir(id string) string { return filepath.Join(StateRoot, id) }

func main() {
	root := &cobra.Command{
		Use:           "isoobs-lab",
		Short:         "Run the local isoobs incident lab (real control plane, kwok nodes, real pod netns/cgroups)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(upCmd(), downCmd(), statusCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "isoobs-lab:", err)
		os.Exit(1)
	}
}

func upCmd() *cobra.Command {
	var (
		id, driver       string
		nodes            []string
		foreground, scen bool
		noCoreDNS        bool
		realNode         bool
		timeout          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a lab (in the background unless --foreground) and print its KUBECONFIG",
		RunE: func(*cobra.Command, []string) error {
			if os.Geteuid() != 0 {
				return errors.New("the lab needs root (network namespaces, veths, cgroups); run: sudo -E go run ./testlab/cmd/isoobs-lab up")
			}
			if st, alive := readState(id); alive {
				return fmt.Errorf("lab %q is already running (pid %d); KUBECONFIG=%s — stop it with: isoobs-lab down --id %s", id, st.PID, st.Kubeconfig, id)
			}
			if foreground {
				return runForeground(id, driver, nodes, scen, noCoreDNS, realNode, timeout)
			}
			args := []string{"up", "--foreground", "--id=" + id, "--nodes=" + strings.Join(nodes, ","),
				"--cgroup-driver=" + driver, "--timeout=" + timeout.String(),
				"--scenario=" + strconv.FormatBool(scen), "--no-coredns=" + strconv.FormatBool(noCoreDNS),
				"--real-node=" + strconv.FormatBool(realNode)}
			return startBackground(id, args, timeout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "lab", "lab id, 1-5 characters of [a-z0-9]; prefixes host objects")
	f.StringSliceVar(&nodes, "nodes", testlab.DefaultNodes, "kwok node names")
	f.StringVar(&driver, "cgroup-driver", podnet.DriverSystemd, "pod cgroup naming: systemd or cgroupfs")
	f.BoolVar(&foreground, "foreground", false, "run in this process until interrupted (Ctrl-C tears down)")
	f.BoolVar(&scen, "scenario", false, "also apply the seed 000 app (namespace tenant-jobs)")
	f.BoolVar(&noCoreDNS, "no-coredns", false, "skip kube-system/coredns")
	f.BoolVar(&realNode, "real-node", false, "also join a real kubelet + containerd node ("+testlab.RealNodeName+"; import images with ctr -a <dir>/cp/realnode/containerd/containerd.sock -n k8s.io images import)")
	f.DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the lab (a first run builds the binaries, ~5 min)")
	return cmd
}

// startBackground re-runs this program as `up --foreground` in its own session, waits until it
// wrote state.json (or died), and prints where the kubeconfig is.
func startBackground(id string, args []string, timeout time.Duration) error {
	dir := stateDir(id)
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "lab.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(self, args...)
	child.Stdout, child.Stderr = logFile, logFile
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // survives this process and the terminal
	if err := child.Start(); err != nil {
		return fmt.Errorf("starting the lab process: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	deadline := time.After(timeout + 10*time.Second)
	for {
		if st, ok := readState(id); ok && st.PID == child.Process.Pid {
			fmt.Printf("lab %q is up (pid %d, log %s)\n", id, st.PID, logPath)
			fmt.Printf("export KUBECONFIG=%s\n", st.Kubeconfig)
			fmt.Printf("stop it with: isoobs-lab down --id %s\n", id)
			return nil
		}
		select {
		case err := <-exited:
			data, _ := os.ReadFile(logPath)
			return fmt.Errorf("the lab process exited (%v) before it was ready; its log %s ends with:\n%s", err, logPath, lastLines(string(data), 30))
		case <-deadline:
			_ = child.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("lab not ready after %v; see %s, then run isoobs-lab down --id %s", timeout, logPath, id)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func runForeground(id, driver string, nodes []string, scen, noCoreDNS, realNode bool, timeout time.Duration) error {
	dir := stateDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	began := time.Now()
	lab, err := testlab.Start(startCtx, testlab.Options{
		ID: id, Nodes: nodes, Driver: driver, NoCoreDNS: noCoreDNS, RealNode: realNode,
		Dir:  filepath.Join(dir, "cp"),
		Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) },
	})
	if err != nil {
		_ = os.RemoveAll(filepath.Join(dir, "cp")) // keep lab.log: `up` shows its tail
		return err
	}
	defer func() {
		if err := lab.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "isoobs-lab: teardown:", err)
		}
		_ = os.RemoveAll(dir)
		_ = os.Remove(StateRoot) // only when no other lab is up
		fmt.Fprintf(os.Stderr, "lab %q is down\n", id)
	}()
	if scen {
		if _, err := scenario.Apply(startCtx, lab); err != nil {
			return err
		}
	}
	st := state{
		ID: id, PID: os.Getpid(), Kubeconfig: lab.CP.Kubeconfig, RestrictedKubeconfig: lab.CP.RestrictedKubeconfig,
		APIServer: lab.CP.APIServerURL, Nodes: lab.NodeNames(), CgroupRoot: lab.CgroupRoot,
		DNSServiceIP: lab.DNSServiceIP.String(), NetIndex: lab.NetIndex, Scenario: scen,
		Started: time.Now().UTC().Format(time.RFC3339),
	}
	if err := writeState(st); err != nil {
		return err
	}
	fmt.Printf("lab %q ready in %v: %d nodes, API %s, kube-dns %s\n", id, time.Since(began).Round(time.Millisecond), len(st.Nodes), st.APIServer, st.DNSServiceIP)
	fmt.Printf("export KUBECONFIG=%s\n", st.Kubeconfig)
	fmt.Printf("(restricted user: %s)\n", st.RestrictedKubeconfig)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "isoobs-lab: stopping")
	return nil
}

func writeState(st state) error {
	data, _ := json.MarshalIndent(st, "", "  ")
	path := filepath.Join(stateDir(st.ID), "state.json")
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// readState returns the lab's recorded state and whether its process is alive.
func readState(id string) (state, bool) {
	var st state
	data, err := os.ReadFile(filepath.Join(stateDir(id), "state.json"))
	if err != nil || json.Unmarshal(data, &st) != nil {
		return st, false
	}
	return st, st.PID > 0 && syscall.Kill(st.PID, 0) == nil && isLabProcess(st.PID)
}

// isLabProcess guards against PID reuse: the process must be this program running `up`.
func isLabProcess(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), "\x00up\x00") && strings.Contains(string(cmdline), "\x00--foreground")
}

func downCmd() *cobra.Command {
	var id string
	var all bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop a lab and remove everything it left (processes, netns, veths, cgroups, files)",
		RunE: func(*cobra.Command, []string) error {
			if os.Geteuid() != 0 {
				return errors.New("needs root: sudo -E go run ./testlab/cmd/isoobs-lab down")
			}
			ids := []string{id}
			if all {
				ids = nil
				ents, _ := os.ReadDir(StateRoot)
				for _, e := range ents {
					ids = append(ids, e.Name())
				}
			}
			var errs []error
			for _, id := range ids {
				if err := down(id); err != nil {
					errs = append(errs, fmt.Errorf("lab %s: %w", id, err))
				}
			}
			// Leftovers of any dead lab, also ones started by tests.
			if err := podnet.SweepStale(); err != nil {
				errs = append(errs, err)
			}
			if err := realnode.SweepStale(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }); err != nil {
				errs = append(errs, err)
			}
			testlab.SweepStaleNetClaims()
			_ = os.Remove(StateRoot)
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVar(&id, "id", "lab", "lab id")
	cmd.Flags().BoolVar(&all, "all", false, "stop every lab started by isoobs-lab up")
	return cmd
}

func down(id string) error {
	st, alive := readState(id)
	if alive {
		_ = syscall.Kill(st.PID, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for syscall.Kill(st.PID, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if syscall.Kill(st.PID, 0) == nil {
			fmt.Fprintf(os.Stderr, "lab %s (pid %d) ignored SIGTERM for 30s; killing it\n", id, st.PID)
			_ = syscall.Kill(st.PID, syscall.SIGKILL)
			time.Sleep(500 * time.Millisecond)
		}
		fmt.Printf("lab %q stopped (pid %d)\n", id, st.PID)
	} else if st.PID == 0 {
		fmt.Printf("lab %q was not running; sweeping leftovers\n", id)
	}
	if _, err := os.Stat(filepath.Join(podnet.StateRoot, id)); err == nil && st.PID > 0 {
		waitReaped(st.PID) // the lab did not clean up after itself
	}
	// Components die with the lab process (Pdeathsig); kill any that did not, found by their
	// data dir on the command line, which only this lab's processes carry.
	killByArg(filepath.Join(stateDir(id), "cp"))
	if err := podnet.SweepStale(); err != nil {
		return err
	}
	if cg2, err := podnet.CgroupV2Mount(); err == nil {
		_ = os.Remove(filepath.Join(cg2, "isoobs-"+id)) // empty once its nodes are swept
	}
	return os.RemoveAll(stateDir(id))
}

// waitReaped waits (up to a minute) until a dead lab process is reaped. Until then it is a
// zombie that podnet.SweepStale counts as a live owner, and its leftovers would stay. Orphans
// are reaped by PID 1, which on some VMs takes tens of seconds.
func waitReaped(pid int) {
	deadline := time.Now().Add(time.Minute)
	told := false
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if i := strings.LastIndexByte(string(data), ')'); i < 0 || !strings.HasPrefix(string(data[i+1:]), " Z") {
			return // alive again under a reused PID, or not a zombie: nothing to wait for
		}
		if !told {
			fmt.Fprintf(os.Stderr, "waiting for PID 1 to reap the dead lab process %d before sweeping...\n", pid)
			told = true
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func killByArg(marker string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(data), marker) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err == nil && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "List labs started by isoobs-lab up",
		RunE: func(*cobra.Command, []string) error {
			ents, _ := os.ReadDir(StateRoot)
			if len(ents) == 0 {
				fmt.Println("no lab is running (start one with: isoobs-lab up)")
				return nil
			}
			for _, e := range ents {
				st, alive := readState(e.Name())
				if !alive {
					fmt.Printf("%s: not running (stale state; clean up with: isoobs-lab down --id %s)\n", e.Name(), e.Name())
					continue
				}
				fmt.Printf("%s: running, pid %d, since %s\n  API %s  KUBECONFIG=%s\n  nodes %s  kube-dns %s  cgroups %s\n",
					st.ID, st.PID, st.Started, st.APIServer, st.Kubeconfig, strings.Join(st.Nodes, ","), st.DNSServiceIP, st.CgroupRoot)
				if cfg, err := clientcmd.BuildConfigFromFlags("", st.Kubeconfig); err == nil {
					cfg.Timeout = 3 * time.Second
					if c, err := kubernetes.NewForConfig(cfg); err == nil {
						if pods, err := c.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{}); err == nil {
							running := 0
							for _, p := range pods.Items {
								if p.Status.Phase == "Running" {
									running++
								}
							}
							fmt.Printf("  pods %d (%d running)\n", len(pods.Items), running)
						} else {
							fmt.Printf("  API not answering: %v\n", err)
						}
					}
				}
			}
			return nil
		},
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
