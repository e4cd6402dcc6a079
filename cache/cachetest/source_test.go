package cachetest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"rangefs/fetch/fetchtest/content"
)

// The fake serves its content exactly, in WriteSize pieces, and counts what
// it sent per call and per chunk.
func TestSourceServesContent(t *testing.T) {
	const size, seed = 300_000, 7
	s := NewSource(size, seed)
	s.WriteSize = 1000
	s.CountChunk = 1 << 16
	var got bytes.Buffer
	if err := s.Fetch(context.Background(), 12345, 100_000, &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), content.Bytes(12345, 100_000, seed)) {
		t.Fatal("bytes differ from the content")
	}
	if s.NCalls() != 1 || s.Calls()[0] != (Call{Off: 12345, N: 100_000}) || s.Bytes() != 100_000 {
		t.Fatalf("calls %v, bytes %d", s.Calls(), s.Bytes())
	}
	if s.Received(0) != 1<<16-12345 || s.Received(1) != 100_000-(1<<16-12345) || s.ChunksReceived() != 2 {
		t.Fatalf("per chunk: %d, %d over %d chunks", s.Received(0), s.Received(1), s.ChunksReceived())
	}
	if err := s.Fetch(context.Background(), size-10, 11, &got); err == nil {
		t.Fatal("a range past the end was served")
	}
	b := []byte("an archive made by a real tool")
	got.Reset()
	if err := BytesSource(b).Fetch(context.Background(), 3, 7, &got); err != nil || got.String() != "archive" {
		t.Fatalf("BytesSource: %q, %v", got.String(), err)
	}
}

// The switches: FailN, Partial, Changed and a gate that holds until the
// ctx ends.
func TestSourceFaults(t *testing.T) {
	s := NewSource(1<<20, 1)
	s.FailN = 1
	var w bytes.Buffer
	if err := s.Fetch(context.Background(), 0, 100, &w); !errors.Is(err, ErrInjected) || w.Len() != 0 {
		t.Fatalf("FailN: %v after %d bytes", err, w.Len())
	}
	s.Set(func(s *Source) { s.Partial = 40 })
	if err := s.Fetch(context.Background(), 0, 100, &w); !errors.Is(err, ErrInjected) || w.Len() != 40 {
		t.Fatalf("Partial: %v after %d bytes", err, w.Len())
	}
	s.Set(func(s *Source) { s.Changed = true })
	var rc interface{ RemoteChanged() bool }
	if err := s.Fetch(context.Background(), 0, 100, &w); !errors.As(err, &rc) || !rc.RemoteChanged() {
		t.Fatalf("Changed: %v", err)
	}
	s.Set(func(s *Source) { s.Changed = false })
	s.Hold(make(chan struct{}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Fetch(ctx, 0, 100, &w); !errors.Is(err, context.Canceled) {
		t.Fatalf("held call with its ctx ended: %v", err)
	}
	s.Hold(nil)
	if err := s.Fetch(context.Background(), 0, 100, &w); err != nil {
		t.Fatalf("released: %v", err)
	}
}
