package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of samples: the
// smallest sample with at least p% of the samples at or below it. It never interpolates,
// so the answer is always a latency that was actually measured. 0 for no samples.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 || p <= 0 || p > 100 || math.IsNaN(p) {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	// p*n first, and a hair of slack, so 99% of 200 is rank 198 despite 0.99 being inexact.
	rank := int(math.Ceil(p*float64(len(s))/100 - 1e-9))
	if rank < 1 {
		rank = 1
	}
	return s[rank-1]
}
