package fs

import "sync"

// openModes keeps a file's open handles in the one I/O mode the kernel
// allows at a time (fs/fuse/iomode.c): while any handle of an inode is an
// ordinary (page-cached) one, a passthrough open fails with EIO, and while
// any is passthrough, so does every other kind of open. The first open
// decides; later opens follow it until every handle of that mode is
// released.
//
// The counts never under-report the kernel's: a handle is counted when its
// open is answered, before the kernel sees the answer, and uncounted when
// the daemon gets its release, after the kernel has dropped it. Counting
// too long only delays passthrough; it never makes an open fail.
//
// Safe for concurrent use. Protects: ordinary, passthrough.
type openModes struct {
	mu          sync.Mutex
	ordinary    int
	passthrough int
}

// open counts a new handle and reports whether it must be passthrough;
// want says whether passthrough is possible for it at all (the file is
// verified and passthrough is enabled). A file whose passthrough handles
// are open keeps getting passthrough: the kernel accepts nothing else.
func (m *openModes) open(want func() bool) (passthrough bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	passthrough = m.passthrough > 0 || (m.ordinary == 0 && want())
	if passthrough {
		m.passthrough++
	} else {
		m.ordinary++
	}
	return passthrough
}

// backing gets the backing file for a handle counted as passthrough, when
// the kernel is about to be offered it. The handle becomes ordinary instead
// (ok false) when the file cannot be opened, or when an ordinary handle is
// open: that happens when an earlier passthrough handle could not get its
// backing file and became ordinary itself, and the kernel would refuse this
// one beside it.
func (m *openModes) backing(get func() (int, bool)) (fd int, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ordinary == 0 {
		fd, ok = get()
	}
	if !ok {
		m.passthrough--
		m.ordinary++
	}
	return fd, ok
}

// release uncounts a handle of the given mode.
func (m *openModes) release(passthrough bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if passthrough {
		m.passthrough--
	} else {
		m.ordinary--
	}
}
