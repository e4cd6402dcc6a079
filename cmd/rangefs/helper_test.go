package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"rangefs/fs"
)

func TestHelperArgs(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want []string
		fake bool
	}{
		{[]string{"http://h/f", "/mnt", "-o", "ro,cache_dir=/c"},
			[]string{"mount", "--daemon", "-o", "ro,cache_dir=/c", "http://h/f", "/mnt"}, false},
		{[]string{"rangefs#http://h/f", "/mnt", "-n", "-s", "-o", "a", "-o", "b", "-t", "fuse.rangefs", "-v"},
			[]string{"mount", "--daemon", "-v", "-o", "a", "-o", "b", "http://h/f", "/mnt"}, false},
		{[]string{"-f", "http://h/f", "/mnt"}, []string{"mount", "--daemon", "http://h/f", "/mnt"}, true},
	} {
		got, fake, err := helperArgs(tc.argv)
		if err != nil || !reflect.DeepEqual(got, tc.want) || fake != tc.fake {
			t.Errorf("helperArgs(%q) = %q, %v, %v; want %q, %v", tc.argv, got, fake, err, tc.want, tc.fake)
		}
	}
	for _, argv := range [][]string{{"http://h/f"}, {"a", "b", "c"}, {"-N", "1", "http://h/f", "/m"}, {"--bogus", "http://h/f", "/m"}} {
		var ue *usageError
		if _, _, err := helperArgs(argv); !errors.As(err, &ue) {
			t.Errorf("helperArgs(%q) = %v, want a usage error", argv, err)
		}
	}
	if !helperName("/sbin/mount.fuse.rangefs") || helperName("/usr/bin/rangefs") {
		t.Error("helperName")
	}
	if !looksLikeHelperCall([]string{"https://h/f", "/mnt", "-o", "ro"}) || looksLikeHelperCall([]string{"mount", "x"}) {
		t.Error("looksLikeHelperCall")
	}
}

func TestTranslateOptions(t *testing.T) {
	flags, env, err := translateOptions("ro,_netdev,nofail,defaults,x-systemd.automount,x-systemd.idle-timeout=60,user,noauto," +
		"exec,nosuid,nodev,auto,rw,cache_dir=/var/c-1,connections=16,allow_other,env.HTTPS_PROXY=http://p:3128,header_file=/etc/h")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"--cache-dir=/var/c-1", "--connections=16", "--allow-other", "--header-file=/etc/h"}; !reflect.DeepEqual(flags, want) {
		t.Errorf("flags %q, want %q", flags, want)
	}
	if len(env) != 1 || env["HTTPS_PROXY"] != "http://p:3128" {
		t.Errorf("env %v", env)
	}
	for _, bad := range []string{"env.=x", "env.X", "--cache-dir=/x"} {
		if _, _, err := translateOptions(bad); err == nil {
			t.Errorf("translateOptions(%q) accepted", bad)
		}
	}
}

// rangefs mount -o takes the options of an fstab line, with the same names.
func TestParseMountOptions(t *testing.T) {
	dir := t.TempDir()
	hf := filepath.Join(dir, "h")
	os.WriteFile(hf, []byte("Authorization: Bearer x\n"), 0o600)
	c, err := parseMount([]string{"-o", "ro,_netdev,cache_dir=/c,connections=16,chunk_size=4M,no_prefetch,header_file=" + hf +
		",env.RANGEFS_HEADERS=X-A: 1,op_timeout=7s,log_level=debug,log_format=json", "http://h/a", "/m"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.CacheDir != "/c" || c.Connections != 16 || c.ChunkSize != 4<<20 || !c.NoPrefetch || c.OpTimeout != 7*time.Second ||
		c.Headers.Get("Authorization") != "Bearer x" || c.Headers.Get("X-A") != "1" || c.Env["RANGEFS_HEADERS"] != "X-A: 1" ||
		c.LogLevel == nil || c.LogLevel.String() != "DEBUG" || !c.LogJSON {
		t.Errorf("parsed %+v", c)
	}
	// foreground undoes the --daemon that mount(8) implies.
	if c, err := parseMount([]string{"--daemon", "-o", "foreground", "http://h/a", "/m"}, noEnv, io.Discard); err != nil || c.Daemon {
		t.Errorf("foreground: %+v %v", c, err)
	}
	for _, o := range []string{"bogus_opt=1", "connections=0", "cache_dir", "log_format=xml", "log_level=loud"} {
		_, err := parseMount([]string{"-o", o, "http://h/a", "/m"}, noEnv, io.Discard)
		var ue *usageError
		key := strings.Split(o, "=")[0]
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), key) && !strings.Contains(err.Error(), strings.ReplaceAll(key, "_", "-")) {
			t.Errorf("-o %s: %v, want a usage error naming it", o, err)
		}
	}
}

// needMount8 skips unless the test can drive the real mount(8) with our
// helper: root, /dev/fuse, the mount binary, and /sbin/mount.fuse.rangefs
// either absent (then installed as a link to the test binary, and removed
// afterwards) or already that link.
func needMount8(t *testing.T) {
	t.Helper()
	needFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("skipping: mount(8) with a helper needs root")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skip("skipping: no mount binary")
	}
	const helper = "/sbin/mount.fuse.rangefs"
	if target, err := os.Readlink(helper); err == nil {
		if target != binary {
			t.Skipf("skipping: %s exists and points to %s, not this test's binary; it is left alone", helper, target)
		}
		return
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Skipf("skipping: %s exists and is not a symbolic link; it is left alone", helper)
	}
	if err := os.Symlink(binary, helper); err != nil {
		t.Skipf("skipping: cannot install %s: %v", helper, err)
	}
	t.Cleanup(func() { os.Remove(helper) })
}

// daemonPIDs lists the processes of the test binary whose arguments name
// dir: the background mounts this test started.
func daemonPIDs(t *testing.T, dir string) []int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if exe == binary && bytes.Contains(cmdline, []byte("\x00"+dir+"\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cleanupDaemon unmounts dir and kills, by PID, any background mount of it
// that is left when the test ends.
func cleanupDaemon(t *testing.T, dir string) {
	t.Cleanup(func() {
		if isMounted(t, dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		for _, pid := range daemonPIDs(t, dir) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// waitDaemonGone waits until no background mount of dir is left.
func waitDaemonGone(t *testing.T, dir string) {
	t.Helper()
	for i := 0; len(daemonPIDs(t, dir)) > 0; i++ {
		if i == 200 {
			t.Fatalf("the background mount of %s is still running 10 s after the unmount", dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mount8(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mount", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mount %q: %v: %s", args, err, out)
	}
}

// mount -t fuse.rangefs URL DIR -o … returns once the mount answers; umount
// ends it and its process.
func TestMountByMount8(t *testing.T) {
	needMount8(t)
	srv, p := patternServer(t, 3<<20+5, 91)
	mnt, cdir := t.TempDir(), t.TempDir()
	cleanupDaemon(t, mnt)
	mount8(t, "-t", "fuse.rangefs", srv.URL(), mnt,
		"-o", "ro,_netdev,nofail,x-systemd.automount,cache_dir="+cdir+",no_prefetch,connections=4,name=data.bin")
	// No waiting: mount(8) has returned, so the mount must answer now.
	readsExact(t, filepath.Join(mnt, "data.bin"), p, "after mount(8)")
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	if isMounted(t, mnt) {
		t.Fatal("still mounted after umount")
	}
	waitDaemonGone(t, mnt)
}

// An fstab line, mounted through mount -T (mount(8)'s alternative fstab),
// and ended by rangefs unmount.
func TestMountByFstabLine(t *testing.T) {
	needMount8(t)
	srv, p := patternServer(t, 2<<20+9, 92)
	dir := t.TempDir()
	mnt, cdir := filepath.Join(dir, "mnt"), filepath.Join(dir, "cache")
	os.Mkdir(mnt, 0o755)
	fstab := filepath.Join(dir, "fstab")
	line := srv.URL() + " " + mnt + " fuse.rangefs ro,noauto,_netdev,nofail,x-systemd.automount,allow_other,cache_dir=" + cdir +
		",connections=4,op_timeout=10s 0 0\n"
	os.WriteFile(fstab, []byte("# test fstab\n"+line), 0o644)
	cleanupDaemon(t, mnt)
	mount8(t, "-T", fstab, mnt)
	readsExact(t, filepath.Join(mnt, "file"), p, "after mount -T")
	if r := rangefs(t, dir, "unmount", mnt); r.code != exitOK {
		t.Fatalf("rangefs unmount: exit %d: %s", r.code, r.stderr)
	}
	if isMounted(t, mnt) {
		t.Fatal("still mounted after rangefs unmount")
	}
	waitDaemonGone(t, mnt)
	if r := rangefs(t, dir, "unmount", mnt); r.code != exitFailure || !strings.Contains(r.stderr, "not mounted") {
		t.Errorf("unmount of a plain directory: exit %d %q", r.code, r.stderr)
	}
}

// What mount.fuse3 runs when the helper link is missing: rangefs URL DIR -o
// OPTS, found on PATH, behaves as the helper.
func TestMountFuse3StyleArgv(t *testing.T) {
	needFUSE(t)
	srv, p := patternServer(t, 1<<20+1, 93)
	mnt := t.TempDir()
	cleanupDaemon(t, mnt)
	r := rangefs(t, t.TempDir(), srv.URL(), mnt, "-o", "ro,dev,suid,cache_dir="+t.TempDir())
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	readsExact(t, filepath.Join(mnt, "file"), p, "after the mount.fuse3 form")
	if r := rangefs(t, t.TempDir(), "unmount", mnt); r.code != exitOK {
		t.Fatalf("unmount: exit %d: %s", r.code, r.stderr)
	}
	waitDaemonGone(t, mnt)
}

// --daemon returns only once the mount answers, and with the child's error
// and exit code when it cannot mount.
func TestMountDaemonReadiness(t *testing.T) {
	needFUSE(t)
	srv, p := patternServer(t, 2<<20+3, 94)
	mnt, cdir := t.TempDir(), t.TempDir()
	cleanupDaemon(t, mnt)
	logFile := filepath.Join(t.TempDir(), "log")
	r := rangefs(t, t.TempDir(), "mount", "--daemon", "--log-file", logFile, "--log-format", "json", "--log-level", "info",
		"--cache-dir", cdir, srv.URL(), mnt)
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !mountAnswers(mnt) {
		t.Fatal("--daemon returned before the mount answered")
	}
	readsExact(t, filepath.Join(mnt, "file"), p, "after --daemon")
	if pids := daemonPIDs(t, mnt); len(pids) != 1 {
		t.Fatalf("%d background processes, want 1", len(pids))
	}
	if r := rangefs(t, t.TempDir(), "unmount", mnt); r.code != exitOK {
		t.Fatalf("unmount: exit %d: %s", r.code, r.stderr)
	}
	waitDaemonGone(t, mnt)
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), "rangefs: mounted") {
		t.Errorf("the log file lacks the mount message: %q", b)
	}

	// Nothing listens at the URL: the parent fails with the child's exit
	// code and message, and nothing stays mounted or running.
	start := time.Now()
	r = rangefs(t, t.TempDir(), "mount", "--daemon", "--cache-dir", cdir, deadURL(t), mnt)
	if r.code != exitNetwork || !strings.Contains(r.stderr, "refused") {
		t.Errorf("bad URL: exit %d %q; want %d with the child's error", r.code, r.stderr, exitNetwork)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the failure took %v", took)
	}
	if isMounted(t, mnt) || len(daemonPIDs(t, mnt)) != 0 {
		t.Error("a failed --daemon left a mount or a process")
	}
	// A mount point that does not exist: a local failure, exit 1.
	r = rangefs(t, t.TempDir(), "mount", "--daemon", "--cache-dir", cdir, srv.URL(), filepath.Join(mnt, "missing"))
	if r.code != exitFailure || !strings.Contains(r.stderr, "missing") {
		t.Errorf("missing mount point: exit %d %q", r.code, r.stderr)
	}
}

// --daemon over a stale mount, left by a daemon killed with SIGKILL (as
// after a crash, and as mount(8) from fstab does next): the new mount
// cleans it up and --daemon returns once the new mount answers. The kernel
// gives the new mount the ID the stale one had, so readiness cannot be
// "an ID that was not there before the cleanup".
func TestMountDaemonOverStaleMount(t *testing.T) {
	needFUSE(t)
	srv, p := patternServer(t, 2<<20+5, 97)
	mnt, cdir := t.TempDir(), t.TempDir()
	cleanupDaemon(t, mnt)
	mount := func(what string) {
		t.Helper()
		start := time.Now()
		r := rangefs(t, t.TempDir(), "mount", "--daemon", "--daemon-wait", "20s", "--cache-dir", cdir, srv.URL(), mnt)
		if r.code != exitOK {
			t.Fatalf("%s: exit %d after %v: %s", what, r.code, time.Since(start).Round(time.Millisecond), r.stderr)
		}
	}
	mount("first mount")
	pids := daemonPIDs(t, mnt)
	if len(pids) != 1 {
		t.Fatalf("%d background processes, want 1", len(pids))
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); len(daemonPIDs(t, mnt)) > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the killed daemon is still there after 10 s")
		}
	}
	// The kernel answers ECONNABORTED while it tears the connection down,
	// ENOTCONN after: both are a stale mount (fs.CleanStale takes either).
	if _, err := os.ReadDir(mnt); !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("after SIGKILL, readdir = %v; want ENOTCONN or ECONNABORTED (a stale mount)", err)
	}
	mount("--daemon over the stale mount")
	readsExact(t, filepath.Join(mnt, "file"), p, "after the remount")
	// Over a live mount: the background process's reason reaches the
	// parent, which has the stderr.
	r := rangefs(t, t.TempDir(), "mount", "--daemon", "--allow-non-empty", "--cache-dir", t.TempDir(), srv.URL(), mnt)
	if r.code == exitOK || !strings.Contains(r.stderr, "already a mount point") {
		t.Errorf("--daemon over a live mount: exit %d, %q; want the reason", r.code, r.stderr)
	}
	if r := rangefs(t, t.TempDir(), "unmount", mnt); r.code != exitOK {
		t.Fatalf("unmount: exit %d: %s", r.code, r.stderr)
	}
	waitDaemonGone(t, mnt)
}

// fuseConn returns the /sys/fs/fuse/connections entry of the mount at dir.
func fuseConn(t *testing.T, dir string) string {
	t.Helper()
	if m, ok := fs.MountedAt(dir); ok {
		if _, minor, ok := strings.Cut(m.Device, ":"); ok {
			return "/sys/fs/fuse/connections/" + minor
		}
	}
	return ""
}

// A mount stopped and killed at any moment of its start dies: the daemon
// never waits on its own mount (a thread of it doing so, when the process is
// killed, makes it an unkillable zombie holding /dev/fuse, which only an
// abort of the FUSE connection frees).
func TestMountKilledDuringStartDies(t *testing.T) {
	needFUSE(t)
	srv, _ := patternServer(t, 1<<20, 95)
	for i := range 24 {
		mnt := t.TempDir()
		cmd := exec.Command(binary, "mount", "--cache-dir", t.TempDir(), "--no-prefetch", srv.URL(), mnt)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		time.Sleep(time.Duration(i) * 10 * time.Millisecond)
		// Stopped and continued, as a debugger or a test does: every thread
		// resumes where it was, and the kill lands in the middle.
		cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(30 * time.Millisecond)
		conn := fuseConn(t, mnt)
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("round %d: the killed mount process did not exit within 10 s (stuck on its own mount)", i)
			// Free it, so the test ends: abort its FUSE connection (found
			// again now, as the mount may not have been listed at the stop).
			if conn == "" {
				conn = fuseConn(t, mnt)
			}
			if conn != "" {
				os.WriteFile(conn+"/abort", []byte("1"), 0)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: the stuck mount process survived an abort of its connection %q", i, conn)
			}
		}
		syscall.Unmount(mnt, syscall.MNT_DETACH)
	}
}
