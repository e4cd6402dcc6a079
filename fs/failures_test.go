package fs

import (
	"testing"
	"time"
)

func TestRecentFailures(t *testing.T) {
	var r recentFailures
	t0 := time.Unix(1000, 0)
	r.add(100, 200, t0)
	for _, c := range []struct {
		off, end int64
		at       time.Duration
		want     bool
	}{
		{100, 200, 0, true},
		{150, 151, 0, true},
		{0, 101, 0, true},
		{199, 300, 0, true},
		{0, 100, 0, false},   // ends where the span starts
		{200, 300, 0, false}, // starts where it ends
		{100, 200, failMemory - time.Millisecond, true},
		{100, 200, failMemory, false}, // expired
	} {
		if _, got := r.since(c.off, c.end, t0.Add(c.at)); got != c.want {
			t.Errorf("[%d,%d) at +%v: %v, want %v", c.off, c.end, c.at, got, c.want)
		}
	}
	if len(r.spans) != 0 {
		t.Errorf("an expired span is still kept: %v", r.spans)
	}
	for i := range 2 * maxFailedSpans {
		r.add(int64(i), int64(i)+1, t0)
	}
	if len(r.spans) != maxFailedSpans {
		t.Errorf("%d spans kept, want at most %d", len(r.spans), maxFailedSpans)
	}
	if _, ok := r.since(0, 1, t0); ok {
		t.Error("the oldest span was not the one forgotten")
	}
	if _, ok := r.since(2*maxFailedSpans-1, 2*maxFailedSpans, t0); !ok {
		t.Error("the newest span was forgotten")
	}
}
