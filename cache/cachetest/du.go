// Package cachetest holds what the tests of cache, fs and cmd/rangefs
// share: the one fake Source (source.go), and measuring what a cache
// directory takes on disk. It imports no part of the module but the
// content generator, so every layer's tests may use it.
package cachetest

import (
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Allocated returns the bytes allocated under dir, as du counts them: the
// blocks of every file (a sparse file's holes take none).
func Allocated(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// SamplePeak samples Allocated(dir) at once and then every period until the
// returned stop is called, which returns the peak and the number of samples.
func SamplePeak(dir string, period time.Duration) (stop func() (peak int64, samples int)) {
	var peak, count atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			if a := Allocated(dir); a > peak.Load() {
				peak.Store(a)
			}
			count.Add(1)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() (int64, int) {
		once.Do(func() { close(done); wg.Wait() })
		return peak.Load(), int(count.Load())
	}
}
