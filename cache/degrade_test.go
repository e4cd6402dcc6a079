package cache

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"

	"rangefs/fetch/fetchtest/testsync"
)

func TestDiskFullDegradesToUncachedReads(t *testing.T) {
	m := testMeta(16 * testChunk)
	dir := cacheDir(t)
	var logs testsync.Buffer
	var fd *faultyData
	src := newFake(m.Size)
	o := Options{
		MaxRequest: 2 * testChunk,
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
		wrapData: func(d dataFile) dataFile {
			fd = &faultyData{dataFile: d, budget: 5*testChunk + 1000, writeErr: syscall.ENOSPC}
			return fd
		},
	}
	f, err := Open(dir, m, src, o)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, f, 100000) // every byte correct although the disk filled up
	readAll(t, f, 77777)  // and again, from what was cached plus the network
	settle(t, f)
	st := f.Stats()
	if st.Present > 5 || st.Present == 0 {
		t.Fatalf("present = %d; only the 5 chunks written before ENOSPC may be present", st.Present)
	}
	if n := strings.Count(logs.String(), "cache disk failed"); n != 1 {
		t.Fatalf("disk failure logged %d times, want once:\n%s", n, logs.String())
	}
	if err := f.Fill(bg); !isDiskError(err) {
		t.Fatalf("Fill on a failed disk: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// Every chunk the index recorded was really written and synced.
	f2 := openT(t, dir, m, newFake(m.Size), Options{})
	if got := f2.Stats().Present; got != st.Present {
		t.Fatalf("index recorded %d chunks, memory said %d", got, st.Present)
	}
	if err := f2.Verify(bg); err != nil {
		t.Fatalf("Verify of chunks committed before ENOSPC: %v", err)
	}
	readAll(t, f2, 100000)
}

func TestSyncFailureMarksNothingPresent(t *testing.T) {
	m := testMeta(6 * testChunk)
	dir := cacheDir(t)
	o := Options{wrapData: func(d dataFile) dataFile {
		return &faultyData{dataFile: d, budget: -1, syncErr: syscall.EIO}
	}}
	f, err := Open(dir, m, newFake(m.Size), o)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, f, 50000)
	if got := f.Stats().Present; got != 0 {
		t.Fatalf("present = %d although no fdatasync succeeded", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, st, err := Inspect(dir); err != nil || st.Present != 0 {
		t.Fatalf("index after failed syncs: %+v %v", st, err)
	}
}

// A failed fdatasync is reported once by Linux; a later one that succeeds
// proves nothing about the pages the first dropped. So a chunk that was
// finished while the failing sync ran is not committed by the next round,
// although that round's sync succeeds.
func TestSyncFailureIsSticky(t *testing.T) {
	m := testMeta(2 * testChunk)
	dir := cacheDir(t)
	inSync, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	o := Options{Pool: NewPool(2), MaxRequest: testChunk, wrapData: func(d dataFile) dataFile {
		return &faultyData{dataFile: d, budget: -1, syncFails: 1, syncHook: func() {
			once.Do(func() { close(inSync); <-release })
		}}
	}}
	src := newFake(m.Size)
	chunk1 := make(chan struct{})
	src.Gate = func(off, n int64) <-chan struct{} {
		if off == testChunk {
			return chunk1
		}
		return nil
	}
	f, err := Open(dir, m, src, o)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- f.Fill(bg) }()
	recv(t, inSync, "the first sync") // chunk 0's round, about to fail
	close(chunk1)                     // chunk 1 is written meanwhile
	waitFor(t, "chunk 1 to reach the committer", func() bool {
		f.st.com.mu.Lock()
		defer f.st.com.mu.Unlock()
		return len(f.st.com.pending) == 1
	})
	close(release)
	recv(t, errc, "Fill") // fails: the disk failed
	settle(t, f)
	if got := f.Stats().Present; got != 0 {
		t.Fatalf("present = %d after a failed fdatasync, want 0", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, st, err := Inspect(dir); err != nil || st.Present != 0 {
		t.Fatalf("index after a failed then a good sync: %+v %v", st, err)
	}
}

// A disk that fills up at a commit (the data file's fdatasync or the index's
// write fails with ENOSPC) makes Fill fail with an error that still says
// ENOSPC, however the failing work learnt of it: get turns that into its
// exit code and its advice to free space and run again. Before, a run that
// found the store already degraded said only that caching had stopped.
func TestFillOnAFullDiskSaysENOSPC(t *testing.T) {
	m := testMeta(8 * testChunk)
	dir := cacheDir(t)
	o := Options{MaxRequest: testChunk, wrapData: func(d dataFile) dataFile {
		return &faultyData{dataFile: d, budget: -1, syncErr: syscall.ENOSPC}
	}}
	f, err := Open(dir, m, newFake(m.Size), o)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 2 {
		if err := f.Fill(bg); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("Fill %d on a full disk: %v, want an error that is ENOSPC", i+1, err)
		}
	}
}

// A remote change is said once: fetch's change error already begins with
// "remote file changed", and the cache's wrapper does not say it again.
func TestStaleErrorSaysItOnce(t *testing.T) {
	for _, cause := range []error{errors.New("remote file changed: size 10, now 11"), errors.New("HTTP 404")} {
		err := staleError(cause)
		if !errors.Is(err, ErrStale) || !errors.Is(err, cause) {
			t.Errorf("%v: not ErrStale and its cause", err)
		}
		if n := strings.Count(err.Error(), "remote file changed"); n != 1 {
			t.Errorf("%q says it %d times", err, n)
		}
	}
}
