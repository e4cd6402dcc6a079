package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"rangefs/fs"
)

// supervisor starts every child process and records every FUSE mount the benchmark
// creates, so cleanup can stop and unmount all of them by PID and path after an error,
// a timeout or a signal. Safe for concurrent use.
type supervisor struct {
	log     io.Writer
	verbose bool

	mu     sync.Mutex
	procs  map[*child]struct{}
	mounts map[string]struct{}
}

func newSupervisor(log io.Writer, verbose bool) *supervisor {
	return &supervisor{log: log, verbose: verbose, procs: make(map[*child]struct{}), mounts: make(map[string]struct{})}
}

// child is one started process. done is closed when it has been reaped; state and
// waitErr are valid after that.
type child struct {
	name    string
	argv    []string
	cmd     *exec.Cmd
	logPath string // stdout and stderr of the process
	started time.Time
	floor   int64 // the driver's own peak RSS (KiB) when the child was spawned; see rssFloor

	done    chan struct{}
	ended   time.Time
	state   *os.ProcessState
	waitErr error
}

// start runs argv in dir with stdout and stderr going to logPath. The child gets its own
// process group so a Ctrl-C at the terminal reaches only the driver, which then stops
// children in order (mount daemons before their mounts are forced off); Pdeathsig asks
// the kernel to send SIGTERM should the driver die without cleaning up.
func (s *supervisor) start(name string, argv []string, dir, logPath string) (*child, error) {
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if s.verbose {
		fmt.Fprintf(s.log, "  $ %s\n", strings.Join(argv, " "))
	}
	c := &child{name: name, argv: argv, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	c.floor = rssFloor()
	c.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	s.mu.Lock()
	s.procs[c] = struct{}{}
	s.mu.Unlock()
	go func() {
		c.waitErr = cmd.Wait()
		c.ended = time.Now()
		c.state = cmd.ProcessState
		s.mu.Lock()
		delete(s.procs, c)
		s.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// exited reports whether the child has been reaped.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wall is the time from start to exit (valid after done).
func (c *child) wall() time.Duration { return c.ended.Sub(c.started) }

// maxRSSKiB is the peak resident set of the child (and any descendants it waited for),
// in KiB, from wait4's rusage; 0 before exit. upper is true when the value is only an
// upper bound: it did not exceed the driver's own RSS at spawn time (see rssFloor).
func (c *child) maxRSSKiB() (kib int64, upper bool) {
	if c.state == nil {
		return 0, false
	}
	if ru, ok := c.state.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss, ru.Maxrss <= c.floor
	}
	return 0, false
}

// cpu is the child's user plus system CPU time (valid after done).
func (c *child) cpu() time.Duration {
	if c.state == nil {
		return 0
	}
	return c.state.UserTime() + c.state.SystemTime()
}

// rssFloor lowers the driver's recorded peak RSS to its current RSS and returns it (KiB).
//
// Why: Go starts children with vfork (CLONE_VM), and at exec Linux folds the peak RSS of
// the address space being left — the driver's — into the new program's maxrss. Without
// this, every tool would report at least the driver's lifetime peak (seen: curl, aria2c
// and rangefs all "26.8 MiB"). Returning freed heap to the OS and resetting the peak
// (clear_refs 5, Linux 4.0+) leaves only the driver's small current RSS as a floor.
func rssFloor() int64 {
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return 0
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return parseStatusKiB(string(b), "VmHWM:")
}

// parseStatusKiB reads a "Key:   123 kB" line of /proc/PID/status.
func parseStatusKiB(status, key string) int64 {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// failure describes how the child ended, with the last line it printed: the text that
// goes into a failed row.
func (c *child) failure() string {
	var why string
	switch {
	case c.state == nil:
		why = "still running"
	case c.state.Success():
		why = "exit 0"
	default:
		why = c.state.String()
	}
	if t := tailFile(c.logPath); t != "" {
		why += ": " + t
	}
	return why
}

// stop ends the child by PID: SIGTERM, then SIGKILL after grace; it returns when the child
// is reaped or 5 s after SIGKILL (a process in uninterruptible sleep cannot be waited for).
func (s *supervisor) stop(c *child, grace time.Duration) {
	if c.exited() {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return
	case <-time.After(grace):
	}
	fmt.Fprintf(s.log, "  %s (pid %d) ignored SIGTERM for %v; sending SIGKILL\n", c.name, c.cmd.Process.Pid, grace)
	c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		fmt.Fprintf(s.log, "  %s (pid %d) not reaped 5 s after SIGKILL\n", c.name, c.cmd.Process.Pid)
	}
}

// runTool runs argv to completion, bounded by timeout and ctx; on either the child is
// stopped and an error returned. The child is returned for its wall time and rusage.
func (s *supervisor) runTool(ctx context.Context, name string, argv []string, dir, logPath string, timeout time.Duration) (*child, error) {
	c, err := s.start(name, argv, dir, logPath)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		s.stop(c, 5*time.Second)
		return c, fmt.Errorf("timed out after %v", timeout)
	case <-ctx.Done():
		s.stop(c, 5*time.Second)
		return c, ctx.Err()
	}
	if !c.state.Success() {
		return c, errors.New(c.failure())
	}
	return c, nil
}

// addMount records a mountpoint so cleanup unmounts it even if the row fails.
func (s *supervisor) addMount(dir string) {
	s.mu.Lock()
	s.mounts[dir] = struct{}{}
	s.mu.Unlock()
}

// unmount takes dir down and makes sure daemon (may be nil) has exited: fusermount3 -u
// (the daemon then exits by itself), then SIGTERM/SIGKILL to the daemon by PID, then a
// lazy unmount if the kernel still lists the mount. Every step is bounded.
func (s *supervisor) unmount(dir string, daemon *child) {
	wasMounted := isMounted(dir)
	if wasMounted {
		s.quiet(10*time.Second, "fusermount3", "-u", dir)
	}
	if daemon != nil {
		// A daemon whose mount went away exits by itself; one that never mounted will not.
		grace := 15 * time.Second
		if !wasMounted {
			grace = 0
		}
		select {
		case <-daemon.done:
		case <-time.After(grace):
			if wasMounted {
				fmt.Fprintf(s.log, "  %s did not exit 15 s after unmount; stopping it\n", daemon.name)
			}
			s.stop(daemon, 5*time.Second)
		}
	}
	if isMounted(dir) {
		s.quiet(10*time.Second, "fusermount3", "-u", dir)
	}
	if isMounted(dir) {
		fmt.Fprintf(s.log, "  %s still mounted; lazy unmount\n", dir)
		s.quiet(10*time.Second, "fusermount3", "-u", "-z", dir)
	}
	if isMounted(dir) {
		s.quiet(10*time.Second, "umount", "-l", dir)
	}
	s.mu.Lock()
	delete(s.mounts, dir)
	s.mu.Unlock()
}

// quiet runs a helper command with a deadline, ignoring its result: the caller checks
// the state it wanted (isMounted) instead.
func (s *supervisor) quiet(d time.Duration, argv ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = time.Second
	if s.verbose {
		fmt.Fprintf(s.log, "  $ %s\n", strings.Join(argv, " "))
	}
	cmd.Run()
}

// cleanup stops every child still running (mount daemons first, since the mounts depend
// on them, then the rest) and takes down every recorded mount. Bounded; safe to call twice.
func (s *supervisor) cleanup() {
	s.mu.Lock()
	mounts := make([]string, 0, len(s.mounts))
	for m := range s.mounts {
		mounts = append(mounts, m)
	}
	procs := make([]*child, 0, len(s.procs))
	for c := range s.procs {
		procs = append(procs, c)
	}
	s.mu.Unlock()
	for _, m := range mounts {
		s.unmount(m, nil)
	}
	var wg sync.WaitGroup
	for _, c := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stop(c, 5*time.Second)
		}()
	}
	wg.Wait()
	for _, m := range mounts {
		if isMounted(m) {
			s.unmount(m, nil)
		}
	}
}

// isMounted reports whether dir is a mountpoint in this mount namespace.
func isMounted(dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	_, ok := fs.MountedAt(abs)
	return ok
}

// tailFile returns the last non-empty line of a log file, trimmed to 200 bytes, for a
// failed row's message.
func tailFile(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 8 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		f.Seek(fi.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, max))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if len(last) > 200 {
		last = last[:200] + "…"
	}
	return last
}
