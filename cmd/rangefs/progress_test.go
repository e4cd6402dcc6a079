package main

import (
	"strings"
	"testing"
	"time"

	"rangefs/cache"
)

func TestProgressLine(t *testing.T) {
	half := progressLine(cache.Stats{Size: 200 << 20, BytesPresent: 100 << 20, Active: 3}, 10<<20, 5*time.Second)
	for _, want := range []string{"50.0%", "100.0 MiB / 200.0 MiB", "10.0 MiB/s", "ETA 0:10", "3 conn", "[##########..........]"} {
		if !strings.Contains(half, want) {
			t.Errorf("half-way line %q lacks %q", half, want)
		}
	}
	if l := progressLine(cache.Stats{Size: 10, BytesPresent: 1}, 0, time.Second); !strings.Contains(l, "ETA --:--") {
		t.Errorf("no rate yet: %q", l)
	}
	if l := progressLine(cache.Stats{Size: 10, BytesPresent: 10}, 5, 75*time.Second); !strings.Contains(l, "in 1:15") {
		t.Errorf("finished: %q", l)
	}
}

func TestRateMeter(t *testing.T) {
	m := newRateMeter()
	t0 := time.Unix(1000, 0)
	m.add(t0, 0)
	if m.rate() != 0 {
		t.Errorf("one sample gives rate %v", m.rate())
	}
	for i := 1; i <= 20; i++ {
		m.add(t0.Add(time.Duration(i)*time.Second), int64(i)*1000)
	}
	if r := m.rate(); r < 999 || r > 1001 {
		t.Errorf("steady 1000 B/s measured as %v", r)
	}
}

func TestBarTextFits(t *testing.T) {
	st := cache.Stats{Size: 200 << 20, BytesPresent: 100 << 20, Active: 3}
	for _, w := range []int{200, 60, 30, 16, 4} {
		if l := barText(st, 10<<20, w); len(l) > max(w, 4) || !strings.Contains(l, "50") {
			t.Errorf("width %d: %q", w, l)
		}
	}
	if l := barText(st, 10<<20, 200); !strings.Contains(l, "3 conn") || !strings.Contains(l, "ETA 0:10") {
		t.Errorf("wide: %q", l)
	}
	if got := fitName("a-very-long-file-name.iso", 10); got != "…-name.iso" {
		t.Errorf("fitName = %q", got)
	}
}

func TestSummaryLine(t *testing.T) {
	st := cache.Stats{Size: 100 << 20, BytesPresent: 100 << 20, BytesFetched: 100 << 20}
	if l := summaryLine("f", st, 0, 1250*time.Millisecond); l != "saved f (100.0 MiB) in 1.25s, 80.0 MiB/s average" {
		t.Errorf("%q", l)
	}
	// Milliseconds are shown as such, never as 0:00 with 0 B/s.
	if l := summaryLine("f", st, 0, 42*time.Millisecond); !strings.Contains(l, "in 0.042s") || strings.Contains(l, " 0 B/s") {
		t.Errorf("%q", l)
	}
	if l := summaryLine("f", st, 60<<20, 2*time.Second); !strings.Contains(l, "20.0 MiB/s") || !strings.Contains(l, "40.0 MiB fetched") {
		t.Errorf("resumed: %q", l)
	}
	if l := summaryLine("f", st, 0, 75*time.Second); !strings.Contains(l, "in 1:15") {
		t.Errorf("long: %q", l)
	}
}
