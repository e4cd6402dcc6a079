package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"rangefs/cache"
	"rangefs/fs"
)

// daemonFDEnv tells a background child which descriptor reaches its parent.
const daemonFDEnv = "RANGEFS_DAEMON_FD"

// fuseSuperMagic is statfs's f_type of a FUSE file system.
const fuseSuperMagic = 0x65735546

// daemonError is the failure a background child reported to its parent,
// with the child's exit code.
type daemonError struct {
	code int
	msg  string
}

func (e *daemonError) Error() string { return e.msg }

// runMountCLI runs a mount as the command line asked: in the foreground
// (telling systemd when it is ready, and how far the cache has got), or with
// --daemon in a background child that this process waits for.
func runMountCLI(ctx context.Context, c *mountConfig, argv []string, stderr io.Writer) error {
	for k, v := range c.Env {
		os.Setenv(k, v)
	}
	if err := checkMountpointEmpty(c.Mountpoint, c.AllowNonEmpty); err != nil {
		return err
	}
	var parent *os.File
	if fd := os.Getenv(daemonFDEnv); fd != "" {
		n, err := strconv.Atoi(fd)
		if err != nil || n < 3 {
			return fmt.Errorf("bad %s=%q", daemonFDEnv, fd)
		}
		parent = os.NewFile(uintptr(n), "parent")
		os.Unsetenv(daemonFDEnv)
	} else if c.Daemon {
		return spawnDaemon(ctx, c, argv, stderr)
	}
	// early tells a waiting --daemon parent why this process fails before its
	// mount answers: the background process has no stderr of its own.
	early := func(err error) error {
		if parent != nil {
			fmt.Fprintf(parent, "ERR %d %s\n", exitCode(ctx, err), oneLine(err.Error()+errorHint(err)))
			parent.Close()
		}
		return err
	}
	if c.MetricsAddr != "" {
		stop, err := serveMetrics(c.MetricsAddr)
		if err != nil {
			return early(err)
		}
		defer stop()
	}
	w := stderr
	if c.LogFile != "" {
		f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return early(fmt.Errorf("--log-file: %w", err))
		}
		defer f.Close()
		w = f
	}
	// A stale mount, left by a daemon that died, goes first: the new mount
	// may get its mount ID, so it must not be in the baseline below.
	if cleaned, err := fs.CleanStale(c.Mountpoint); err != nil {
		return early(err)
	} else if cleaned {
		fmt.Fprintf(w, "rangefs: removed a stale mount left at %s by a process that died\n", c.Mountpoint)
	}
	// Readiness is read from the kernel's mount table, never by touching
	// the mount: a thread of this process waiting on its own mount when the
	// process is killed would wait for ever (the daemon cannot answer).
	// The mount point's real path is resolved now, before the mount:
	// resolving it later would stat the mount itself.
	where, err := resolvedPath(c.Mountpoint)
	if err != nil {
		return early(err)
	}
	before, err := mountIDs(where)
	if err != nil {
		return early(err)
	}
	done := make(chan error, 1)
	go func() { done <- runMount(ctx, c, w) }()

	ready := false
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	var status <-chan time.Time
	notifying := os.Getenv("NOTIFY_SOCKET") != ""
	for {
		select {
		case err := <-done:
			daemon.SdNotify(false, daemon.SdNotifyStopping)
			if !ready && parent != nil {
				if err == nil {
					err = errors.New("the mount ended before it answered")
				}
				return early(err)
			}
			return err
		case <-ctx.Done():
			// runMount unmounts and returns; say so to systemd first.
			daemon.SdNotify(false, daemon.SdNotifyStopping)
			ctx = context.WithoutCancel(ctx)
		case <-poll.C:
			if ready {
				continue
			}
			if now, err := mountIDs(where); err != nil || !newMount(before, now) {
				continue
			}
			ready = true
			poll.Stop()
			if parent != nil {
				fmt.Fprintln(parent, "READY")
				parent.Close()
			}
			daemon.SdNotify(false, daemon.SdNotifyReady)
			if notifying {
				daemon.SdNotify(false, "STATUS="+cacheStatusLine(c.Mountpoint))
				t := time.NewTicker(5 * time.Second)
				defer t.Stop()
				status = t.C
			}
		case <-status:
			daemon.SdNotify(false, "STATUS="+cacheStatusLine(c.Mountpoint))
		}
	}
}

// checkMountpointEmpty refuses to hide files under a mount, as rclone does.
// A directory that cannot be listed is left to the mount to report (a stale
// FUSE mount there is cleaned up by it).
func checkMountpointEmpty(dir string, allow bool) error {
	if allow {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	if len(names) > 0 {
		return usagef("mount point %s is not empty (it holds %s, which the mount would hide); "+
			"empty it, choose another, or pass --allow-non-empty", dir, names[0])
	}
	return nil
}

// resolvedPath is dir made absolute with its symlinks resolved, as
// mountinfo names mount points. It stats every part of dir: never call it
// on a mount of this process.
func resolvedPath(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	return abs, nil
}

// mountIDs lists the mount IDs of the FUSE mounts at abs (a path from
// resolvedPath), from /proc/self/mountinfo; it touches no mount.
func mountIDs(abs string) (map[string]bool, error) {
	ms, err := fs.Mounts()
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, m := range ms {
		if m.Point == abs && strings.HasPrefix(m.FSType, "fuse") {
			ids[m.ID] = true
		}
	}
	return ids, nil
}

func newMount(before, now map[string]bool) bool {
	for id := range now {
		if !before[id] {
			return true
		}
	}
	return false
}

// mountAnswers reports whether dir is a FUSE mount on a device of its own
// that answers a directory listing. Only another process may ask: see
// runMountCLI.
func mountAnswers(dir string) bool {
	var sfs syscall.Statfs_t
	if syscall.Statfs(dir, &sfs) != nil || sfs.Type != fuseSuperMagic {
		return false
	}
	var st, pst syscall.Stat_t
	if syscall.Stat(dir, &st) != nil || syscall.Stat(filepath.Dir(filepath.Clean(dir)), &pst) != nil || st.Dev == pst.Dev {
		return false
	}
	_, err := os.ReadDir(dir)
	return err == nil
}

// cacheStatusLine sums up this process's caches for systemd's STATUS=.
func cacheStatusLine(dir string) string {
	var size, present int64
	files := cache.Files()
	for _, f := range files {
		st := f.Stats()
		size += st.Size
		present += st.BytesPresent
	}
	pct := 100.0
	if size > 0 {
		pct = 100 * float64(present) / float64(size)
	}
	return fmt.Sprintf("%d file(s) at %s; %s of %s cached (%.1f%%)", len(files), dir, humanBytes(present), humanBytes(size), pct)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

// spawnDaemon starts this program again, detached in a session of its own,
// and waits until it reports that the mount answers (exit 0) or why it could
// not mount (its exit code and message), at most --daemon-wait.
func spawnDaemon(ctx context.Context, c *mountConfig, argv []string, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--daemon: cannot find this program to start it again: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(exe, argv...)
	cmd.Env = append(os.Environ(), daemonFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Without --log-file the background process has nowhere to log: its
	// failure to mount comes back through the pipe, later warnings are lost.
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("--daemon: %w", err)
	}
	w.Close()
	type answer struct {
		line string
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		got <- answer{strings.TrimSpace(line), err}
	}()
	deadline := time.Now().Add(c.DaemonWait)
	timer := time.NewTimer(c.DaemonWait)
	defer timer.Stop()
	stop := func() {
		// Before it answered, the child may be half way into mounting:
		// SIGTERM lets it unmount; SIGKILL if it does not end.
		cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	select {
	case a := <-got:
		switch {
		case a.line == "READY":
			// This process is not the daemon, so it may ask the mount.
			if err := answersWithin(c.Mountpoint, time.Until(deadline)); err != nil {
				stop()
				return err
			}
			if !c.Quiet && isTerminal(stderr) {
				fmt.Fprintf(stderr, "rangefs: mounted at %s in the background (pid %d); 'rangefs unmount %s' ends it\n",
					c.Mountpoint, cmd.Process.Pid, c.Mountpoint)
			}
			cmd.Process.Release()
			return nil
		case strings.HasPrefix(a.line, "ERR "):
			cmd.Wait()
			codeStr, msg, _ := strings.Cut(strings.TrimPrefix(a.line, "ERR "), " ")
			code, err := strconv.Atoi(codeStr)
			if err != nil || code == 0 {
				code = exitFailure
			}
			return &daemonError{code: code, msg: msg}
		}
		cmd.Wait()
		return fmt.Errorf("the background mount exited (%v) before it answered", cmd.ProcessState)
	case <-timer.C:
		stop()
		return fmt.Errorf("the background mount did not answer within --daemon-wait %v; stopped it", c.DaemonWait)
	case <-ctx.Done():
		stop()
		return fmt.Errorf("stopped while waiting for the background mount: %w", ctx.Err())
	}
}

// answersWithin waits until the mount at dir answers, at most d.
func answersWithin(dir string, d time.Duration) error {
	ok := make(chan bool, 1)
	go func() {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if mountAnswers(dir) {
				ok <- true
				return
			}
		}
		ok <- false
	}()
	select {
	case good := <-ok:
		if good {
			return nil
		}
	case <-time.After(d + time.Second):
	}
	return fmt.Errorf("the background mount at %s is up but does not answer", dir)
}

// unmountCommand is `rangefs unmount DIR`.
func unmountCommand() *cobra.Command {
	var lazy bool
	var wait time.Duration
	cmd := newCommand("unmount [flags] MOUNTPOINT", "unmount a rangefs mount",
		"Unmount MOUNTPOINT (with fusermount3 -u, or umount(2) when it is missing) and wait\n"+
			"until the mount is gone. The rangefs process serving it then exits.\n")
	cmd.Flags().BoolVarP(&lazy, "lazy", "z", false, "detach now even if files are open (they keep working until closed)")
	cmd.Flags().DurationVar(&wait, "timeout", 10*time.Second, "longest to wait for the mount to go")
	cmd.RunE = func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usagef("unmount takes one mount point")
		}
		return unmount(args[0], lazy, wait)
	}
	return cmd
}

func unmount(dir string, lazy bool, wait time.Duration) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	mounted, err := isMountPoint(abs)
	if err != nil {
		return err
	}
	if !mounted {
		return fmt.Errorf("%s is not mounted", dir)
	}
	if path, err := exec.LookPath("fusermount3"); err == nil {
		args := []string{"-u"}
		if lazy {
			args = append(args, "-z")
		}
		if out, err := exec.Command(path, append(args, abs)...).CombinedOutput(); err != nil {
			return fmt.Errorf("fusermount3 -u %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
		}
	} else {
		flags := 0
		if lazy {
			flags = syscall.MNT_DETACH
		}
		if err := syscall.Unmount(abs, flags); err != nil {
			return &os.PathError{Op: "unmount", Path: dir, Err: err}
		}
	}
	deadline := time.Now().Add(wait)
	for {
		if m, err := isMountPoint(abs); err != nil || !m {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still mounted after %v", dir, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isMountPoint reads /proc/self/mountinfo for a mount at dir (absolute).
func isMountPoint(dir string) (bool, error) {
	ms, err := fs.Mounts()
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.Point == dir {
			return true, nil
		}
	}
	return false, nil
}
