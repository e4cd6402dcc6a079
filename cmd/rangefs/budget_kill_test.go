package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"rangefs/cache/cachetest"
)

// SIGKILLs of a mount in the middle of evicting never leave a cache that
// serves a wrong byte, and the cap holds afterwards.
func TestMountKillLoopDuringEviction(t *testing.T) {
	needFUSE(t)
	const size, limit = 48 << 20, 8 << 20
	kills := 30
	srv, p := patternServer(t, size, 61)
	cdir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 8))
	buf := make([]byte, 1<<20)
	checked := 0
	for k := range kills {
		mnt := t.TempDir()
		m := startMount(t, "file", "--cache-dir", cdir, "--cache-max-size", strconv.Itoa(limit), "--no-prefetch", srv.URL(), mnt)
		f, err := os.Open(filepath.Join(mnt, "file"))
		if err != nil {
			t.Fatal(err)
		}
		// Kill at a random moment while reads force eviction.
		killAt := time.Now().Add(time.Duration(50+rng.IntN(250)) * time.Millisecond)
		killed := false
		for i := 0; i < 1000; i++ {
			if !killed && time.Now().After(killAt) {
				m.cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
			off := rng.Int64N(size - int64(len(buf)))
			n, err := f.ReadAt(buf, off)
			if err != nil {
				if killed {
					break
				}
				t.Fatalf("kill %d: read at %d before the kill: %v", k, off, err)
			}
			if !bytes.Equal(buf[:n], p.Bytes(off, int64(n))) {
				t.Fatalf("kill %d: wrong bytes at %d", k, off)
			}
			checked++
		}
		if checked <= limit>>20 && k > 10 {
			t.Fatalf("after %d mounts only %d reads were made: eviction never began", k+1, checked)
		}
		f.Close()
		if !killed {
			m.cmd.Process.Signal(syscall.SIGKILL)
		}
		<-m.done
		m.done <- nil
		syscall.Unmount(mnt, syscall.MNT_DETACH)
	}
	// A mount after the kills serves every byte right, within the cap.
	mnt := t.TempDir()
	startMount(t, "file", "--cache-dir", cdir, "--cache-max-size", strconv.Itoa(limit), "--no-prefetch", srv.URL(), mnt)
	stop := cachetest.SamplePeak(cdir, 100*time.Millisecond)
	if got := uncachedSHA256(t, filepath.Join(mnt, "file")); got != p.SHA256() {
		t.Fatalf("after %d kills: sha256 %s, want %s", kills, got, p.SHA256())
	}
	peak, _ := stop()
	t.Logf("%d kills, %d reads checked during them; du peak afterwards %d (limit %d)", kills, checked, peak, limit)
	if peak > limit+8<<20 {
		t.Fatalf("after the kills du peaked at %d, over %d", peak, limit+8<<20)
	}
}
