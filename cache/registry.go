package cache

import "sync"

// openFiles holds every File between Open and Close, so that a process can
// report on its caches (systemd status, metrics) without going through the
// file system it serves.
var openFiles sync.Map // *File -> *readCounters

// Files returns the Files this process has open now, in no particular order.
func Files() []*File {
	var fs []*File
	openFiles.Range(func(k, _ any) bool {
		fs = append(fs, k.(*File))
		return true
	})
	return fs
}
