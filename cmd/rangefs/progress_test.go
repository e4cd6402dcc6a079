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
