//go:build !linux

package cache

import "os"

// fdatasync falls back to a full fsync where fdatasync is not available.
func fdatasync(f *os.File) error { return f.Sync() }

const fadvWillNeed = 0

// fadvise is a no-op where posix_fadvise is not available.
func fadvise(f *os.File, off, n int64, advice int) {}
