package controlplane

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// spawner starts child processes from one OS thread that it keeps locked for its whole life.
// Pdeathsig fires when the *thread* that forked the child exits, not the process; Go may retire
// threads (e.g. ones a netns-switching goroutine left locked), which would randomly kill a
// component. A dedicated locked thread only exits when the spawner is closed.
type spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		// Never unlock: when this goroutine returns the thread exits, which is what Pdeathsig wants
		// to see only once every child has been reaped.
		defer close(s.done)
		for r := range s.reqs {
			r.err <- r.cmd.Start()
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Own process group so Stop can kill helpers a component forks; SIGKILL if we die.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	r := spawnReq{cmd: cmd, err: make(chan error, 1)}
	s.reqs <- r
	return <-r.err
}

func (s *spawner) close() {
	close(s.reqs)
	<-s.done
}

// component is one running control-plane program.
type component struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	exited  chan struct{}
	waitErr error
}

func (s *spawner) startComponent(dir, name, bin string, args ...string) (*component, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = dir
	c := &component{name: name, cmd: cmd, logPath: logPath, logFile: f, exited: make(chan struct{})}
	if err := s.start(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	go func() {
		c.waitErr = cmd.Wait()
		f.Close()
		close(c.exited)
	}()
	return c, nil
}

func (c *component) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// logTail returns the last lines of the component's log, for error messages.
func (c *component) logTail(n int) string {
	data, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", c.logPath, err)
	}
	return tail(string(data), n)
}

// failure describes a component that died or did not become ready, with its log tail.
func (c *component) failure(what string) error {
	state := "still running"
	if !c.running() {
		state = fmt.Sprintf("exited: %v", c.waitErr)
	}
	return fmt.Errorf("%s %s (%s); last lines of %s:\n%s", c.name, what, state, c.logPath, c.logTail(30))
}

// stop kills the component's whole process group and waits for it.
func (c *component) stop(grace time.Duration) {
	if c == nil || c.cmd.Process == nil {
		return
	}
	pgid := c.cmd.Process.Pid
	if grace > 0 && c.running() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-c.exited
}

// Process is a long-running helper program of the lab (e.g. a real node's kubelet and
// containerd), started like the control plane's components: own process group, SIGKILL when
// this process dies, output to <dir>/<name>.log.
type Process struct{ c *component }

var sharedSpawner struct {
	once sync.Once
	s    *spawner
}

// StartProcess starts bin with args, logging to <dir>/<name>.log.
func StartProcess(dir, name, bin string, args ...string) (*Process, error) {
	sharedSpawner.once.Do(func() { sharedSpawner.s = newSpawner() }) // its thread lives as long as the process
	c, err := sharedSpawner.s.startComponent(dir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	return &Process{c: c}, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.c.cmd.Process.Pid }

// Running reports whether the process has not exited.
func (p *Process) Running() bool { return p.c.running() }

// Failure describes the process with the tail of its log, for error messages.
func (p *Process) Failure(what string) error { return p.c.failure(what) }

// LogPath is the process's log file.
func (p *Process) LogPath() string { return p.c.logPath }

// Stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs it and waits.
func (p *Process) Stop(grace time.Duration) { p.c.stop(grace) }
