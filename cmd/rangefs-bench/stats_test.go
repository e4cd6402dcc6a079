package main

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	// 1..200 ms in reverse order: nearest rank of p% is ceil(p*200/100).
	var hundreds []time.Duration
	for i := 200; i >= 1; i-- {
		hundreds = append(hundreds, time.Duration(i)*time.Millisecond)
	}
	tests := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample p50", ms(7), 50, 7 * time.Millisecond},
		{"one sample p99", ms(7), 99, 7 * time.Millisecond},
		{"two samples p50 is the lower", ms(9, 1), 50, 1 * time.Millisecond},
		{"two samples p51 is the upper", ms(9, 1), 51, 9 * time.Millisecond},
		{"200 p50", hundreds, 50, 100 * time.Millisecond},
		{"200 p99 (0.99 is inexact in binary)", hundreds, 99, 198 * time.Millisecond},
		{"200 p100 is the max", hundreds, 100, 200 * time.Millisecond},
		{"200 p0.1 is the min", hundreds, 0.1, 1 * time.Millisecond},
		{"10 p90", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{"10 p91", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 91, 10 * time.Millisecond},
		{"p0 is invalid", ms(1, 2), 0, 0},
		{"p above 100 is invalid", ms(1, 2), 101, 0},
		{"NaN is invalid", ms(1, 2), math.NaN(), 0},
	}
	for _, tc := range tests {
		if got := percentile(tc.samples, tc.p); got != tc.want {
			t.Errorf("%s: percentile(p=%v) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
	// The caller's slice is left in its order.
	if hundreds[0] != 200*time.Millisecond {
		t.Error("percentile sorted the caller's slice")
	}
}
