//go:build !linux

package cache

import (
	"errors"
	"os"
)

// punchHole is not available here: an evicted chunk keeps its blocks
// (and stays counted) until its object is removed.
func punchHole(f *os.File, off, n int64) error {
	return errors.New("cache: punching holes is not supported on this system")
}
