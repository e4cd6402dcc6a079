package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The example units in deploy/ pass systemd-analyze verify without a
// warning (with the rangefs path pointed at the test binary, which the
// verifier checks is executable).
func TestSystemdUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("skipping: systemd-analyze is not installed")
	}
	dir := t.TempDir()
	units := []string{"rangefs-media.service", "mnt-media.mount", "mnt-media.automount"}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("deploy", u))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, u), []byte(strings.ReplaceAll(string(b), "/usr/local/bin/rangefs", binary)), 0o644)
	}
	args := []string{"verify", "--man=no"}
	for _, u := range units {
		args = append(args, filepath.Join(dir, u))
	}
	out, err := exec.Command(sa, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		for _, u := range units {
			if strings.Contains(l, u) {
				t.Errorf("systemd-analyze: %s", l)
			}
		}
	}
	// The verifier is not a rubber stamp: a broken unit makes it speak.
	os.WriteFile(filepath.Join(dir, "broken.service"), []byte("[Service]\nType=notifyy\nExecStart="+binary+"\n"), 0o644)
	if out, _ := exec.Command(sa, "verify", "--man=no", filepath.Join(dir, "broken.service")).CombinedOutput(); !strings.Contains(string(out), "broken.service") {
		t.Errorf("systemd-analyze said nothing about a broken unit: %s", out)
	}
}

// Under systemd (Type=notify) the mount says READY=1 only once the mount
// answers, reports its cache in STATUS=, and says STOPPING=1 on SIGTERM.
func TestMountSystemdNotify(t *testing.T) {
	needFUSE(t)
	srv, p := patternServer(t, 2<<20+11, 96)
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	cmd := exec.Command(binary, "mount", "--cache-dir", filepath.Join(dir, "cache"), srv.URL(), mnt)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
	next := func(want string) string {
		t.Helper()
		buf := make([]byte, 4096)
		for {
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s from the mount: %v", want, err)
			}
			if msg := string(buf[:n]); strings.HasPrefix(msg, want) {
				return msg
			}
		}
	}
	next("READY=1")
	readsExact(t, filepath.Join(mnt, "file"), p, "at READY=1")
	if msg := next("STATUS="); !strings.Contains(msg, "cached") || !strings.Contains(msg, "1 file(s)") {
		t.Errorf("status %q", msg)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	next("STOPPING=1")
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the mount did not exit within 20 s of SIGTERM")
	}
}
