package cache

import (
	"bytes"
	"context"
	"testing"
	"time"

	"rangefs/cache/cachetest"
)

// A demand read whose ctx has a deadline (the FUSE op timeout) gets its
// fetch retried until that deadline, so a server that is down for a moment
// costs the read time, not an error; without a deadline the Source would give
// up after a few attempts.
func TestDemandRunRetriesUntilReadDeadline(t *testing.T) {
	size := int64(4 * testChunk)
	src := newFake(size)
	f := openT(t, cacheDir(t), testMeta(size), src, Options{})
	src.Set(func(s *cachetest.Source) { s.DownUntil = time.Now().Add(300 * time.Millisecond) })
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(ctx, buf, testChunk); err != nil {
		t.Fatalf("read during a 300 ms outage with a 5 s deadline: %v", err)
	}
	if !bytes.Equal(buf, want(testChunk, 4096)) {
		t.Fatal("wrong bytes")
	}
	attempts := src.Attempts()
	if attempts <= cachetest.OutageAttempts {
		t.Fatalf("%d attempts met the outage; the read should have retried past %d", attempts, cachetest.OutageAttempts)
	}
}

// A run shared by two demand reads lasts until the later deadline: the
// first reader giving up at its own deadline neither cuts a run that is
// still streaming nor fails the second reader.
func TestSharedDemandRunOutlivesFirstDeadline(t *testing.T) {
	t.Run("streaming", func(t *testing.T) {
		size := int64(4 * testChunk)
		src := newFake(size)
		src.WriteSize = 16 << 10
		src.Started = make(chan cachetest.Call, 256)
		// Each write after the first waits 60 ms: the chunk takes about
		// 180 ms, well past the first reader's deadline.
		src.Pause = func(off, done int64) <-chan struct{} {
			ch := make(chan struct{})
			time.AfterFunc(60*time.Millisecond, func() { close(ch) })
			return ch
		}
		f := openT(t, cacheDir(t), testMeta(size), src, Options{})
		first, second := sharedReads(t, f, src, 50*time.Millisecond)
		if first == nil {
			t.Fatal("the first read beat its 50 ms deadline; the test needs it to time out")
		}
		if second != nil {
			t.Fatalf("second read: %v", second)
		}
		if calls := src.Calls(); len(calls) != 1 {
			t.Fatalf("fetches %v; want one: the run was cut at the first reader's deadline", calls)
		}
	})
	t.Run("outage", func(t *testing.T) {
		size := int64(4 * testChunk)
		src := newFake(size)
		src.Started = make(chan cachetest.Call, 256)
		src.DownUntil = time.Now().Add(300 * time.Millisecond)
		f := openT(t, cacheDir(t), testMeta(size), src, Options{})
		first, second := sharedReads(t, f, src, 100*time.Millisecond)
		if first == nil {
			t.Fatal("the first read beat its 100 ms deadline during a 300 ms outage")
		}
		if second != nil {
			t.Fatalf("second read, deadline 5 s, outage 300 ms: %v", second)
		}
	})
}

// sharedReads reads the last 4 KiB of chunk 1 twice: first with a deadline
// of d, then, once the first read's fetch has started, with a deadline of
// 5 s. It returns both errors; the second read's bytes are checked. src's
// started channel must have room for every fetch.
func sharedReads(t *testing.T, f *File, src *cachetest.Source, d time.Duration) (first, second error) {
	t.Helper()
	off := int64(2*testChunk - 4096)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(bg, d)
		defer cancel()
		_, err := f.ReadAt(ctx, make([]byte, 4096), off)
		done <- err
	}()
	recv(t, src.Started, "the first read's fetch")
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	buf := make([]byte, 4096)
	_, second = f.ReadAt(ctx, buf, off)
	if second == nil && !bytes.Equal(buf, want(off, 4096)) {
		t.Fatal("second read: wrong bytes")
	}
	select {
	case first = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("first read never returned")
	}
	return first, second
}

// A run that is streaming when its only reader gives up at the read's
// deadline is not cut there: it completes, so the next read finds the chunk
// cached (the deadline bounds the Source's retries, not a transfer that is
// progressing).
func TestDemandRunOutlivesItsReaderWhileStreaming(t *testing.T) {
	size := int64(4 * testChunk)
	src := newFake(size)
	src.WriteSize = 16 << 10
	src.Pause = func(off, done int64) <-chan struct{} {
		ch := make(chan struct{})
		time.AfterFunc(60*time.Millisecond, func() { close(ch) })
		return ch
	}
	f := openT(t, cacheDir(t), testMeta(size), src, Options{})
	ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	if _, err := f.ReadAt(ctx, make([]byte, 4096), 2*testChunk-4096); err == nil {
		t.Fatal("the read beat its 50 ms deadline; the test needs it to time out")
	}
	waitFor(t, "chunk 1 committed", func() bool { return verifiedRange(f, 1, 2) })
	if calls := src.Calls(); len(calls) != 1 {
		t.Fatalf("fetches %v; want one", calls)
	}
}
