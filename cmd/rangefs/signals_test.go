package main

// The mount daemon against the signals and broken pipes of an ordinary
// terminal session: closing the terminal (SIGHUP), or a reader of its stderr
// that has gone away (SIGPIPE), must not take a mount down.

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"rangefs/fetch/fetchtest"
)

// readsExact reads the whole mounted file and compares it with p, failing
// the test on any error (ENOTCONN once the daemon has died).
func readsExact(t *testing.T, path string, p *fetchtest.PatternReader, when string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: reading %s: %v", when, path, err)
	}
	if string(b) != string(p.Bytes(0, p.Size())) {
		t.Fatalf("%s: wrong bytes through the mount (%d bytes)", when, len(b))
	}
}

// Closing the terminal of `rangefs mount … &` sends SIGHUP; the mount keeps
// serving and still unmounts cleanly on SIGTERM.
func TestMountSurvivesSIGHUP(t *testing.T) {
	needFUSE(t)
	srv, p := patternServer(t, 2<<20+7, 31)
	mnt := t.TempDir()
	m := startMount(t, "file", "--cache-dir", t.TempDir(), "--no-prefetch", srv.URL(), mnt)
	for range 3 {
		if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	// A signal is delivered asynchronously: give a fatal one time to act.
	time.Sleep(300 * time.Millisecond)
	select {
	case <-m.done:
		m.done <- nil
		t.Fatalf("SIGHUP killed the mount (%v): %s", m.cmd.ProcessState, m.stderr.String())
	default:
	}
	readsExact(t, filepath.Join(mnt, "file"), p, "after SIGHUP")
	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM: %s", code, m.stderr.String())
	}
	if isMounted(t, mnt) {
		t.Fatal("mount left behind after SIGTERM")
	}
}

// `rangefs mount … 2>&1 | grep -m1 mounted`: once grep has gone, the next
// warning is written to a broken pipe. The mount keeps serving.
func TestMountSurvivesClosedStderr(t *testing.T) {
	needFUSE(t)
	srv, p := patternServer(t, 2<<20, 32)
	mnt := t.TempDir()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "mount", "--cache-dir", t.TempDir(), "--no-prefetch", "--op-timeout", "3s", srv.URL(), mnt)
	cmd.Stderr = pw // the child's fd 2 is the pipe itself, as with a shell pipeline
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
		if isMounted(t, mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	// grep -m1 mounted: read up to that line, then go away.
	mounted := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "rangefs: mounted") {
				mounted <- true
				return
			}
		}
		mounted <- false
	}()
	select {
	case ok := <-mounted:
		if !ok {
			t.Fatal("rangefs mount closed its stderr without saying it was mounted")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("rangefs mount did not say it was mounted within 10 s")
	}
	pr.Close()

	// A failed read logs a warning, to the broken pipe.
	srv.Inject(fetchtest.Fault{Kind: fetchtest.Status, Code: 403, RangedOnly: true})
	path := filepath.Join(mnt, "file")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, rerr := f.ReadAt(make([]byte, 4096), 1<<20)
	f.Close()
	if rerr == nil || rerr == io.EOF {
		t.Fatalf("a read the server refuses succeeded (%v): no warning was triggered", rerr)
	}
	srv.ClearFaults()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		done <- err
		t.Fatalf("a warning written to a closed stderr killed the mount: %v", cmd.ProcessState)
	default:
	}
	readsExact(t, path, p, "after a warning to a closed stderr")
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		done <- nil
	case <-time.After(15 * time.Second):
		t.Fatal("rangefs mount did not exit within 15 s of SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	if isMounted(t, mnt) {
		t.Fatal("mount left behind after SIGTERM")
	}
}

// The same remote file twice in one mount is a usage error, found before
// any request: it used to say that the cache was in use by the mount's own PID.
func TestMountSameURLTwiceIsUsageError(t *testing.T) {
	srv, _ := patternServer(t, 1<<20, 33)
	signed := func(sig string) string { return srv.URL() + "?X-Amz-Expires=60&X-Amz-Signature=" + sig }
	for _, tc := range []struct {
		name string
		urls []string
	}{
		{"same URL", []string{srv.URL(), srv.URL()}},
		{"same URL among others", []string{srv.URLFor("/other"), srv.URL(), srv.URL()}},
		{"signed twice", []string{signed("one"), signed("two")}},
		{"with user info", []string{srv.URL(), strings.Replace(srv.URL(), "http://", "http://user:s3cret@", 1)}},
	} {
		srv.ResetStats()
		args := append([]string{"mount", "--cache-dir", t.TempDir()}, tc.urls...)
		r := rangefs(t, t.TempDir(), append(args, t.TempDir())...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "more than once") {
			t.Errorf("%s: exit %d, stderr %q; want exit %d saying it is given more than once", tc.name, r.code, r.stderr, exitUsage)
		}
		if strings.Contains(r.stderr, "s3cret") {
			t.Errorf("%s: the error shows the password: %s", tc.name, r.stderr)
		}
		if strings.Contains(r.stderr, "pid") {
			t.Errorf("%s: the error still blames a process: %s", tc.name, r.stderr)
		}
		if n := srv.Stats().Requests; n != 0 {
			t.Errorf("%s: %d requests before the refusal", tc.name, n)
		}
	}
}
