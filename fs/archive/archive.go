package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"sync"
	"sync/atomic"
)

// Limits bound what an archive may cost. The zero value means the defaults.
type Limits struct {
	// MaxEntries caps the members listed (default 1,000,000); the listing
	// stops there with an ErrLimit in Err.
	MaxEntries int
	// MaxDirectoryBytes caps a zip central directory, read into memory in
	// one piece (default 64 MiB, about 500,000 members).
	MaxDirectoryBytes int64
	// MaxRatio caps a compressed member's declared size over its compressed
	// size (default 1100: deflate cannot exceed 1032, so only a lying header
	// trips it). Such members are left out of the listing.
	MaxRatio int64
	// Window is the per-handle buffer of recent decompressed bytes that
	// serves out-of-order reads without restarting (default 1 MiB).
	Window int
	// CheckpointSpan is the distance in decompressed bytes between two
	// tar.gz checkpoints (default 4 MiB; each costs 32 KiB of index).
	CheckpointSpan int64
	// MaxCheckpoints caps a tar.gz index (default 1024, 32 MiB of
	// windows): when reached, every other checkpoint is dropped and the
	// span doubles, so a huge archive costs bounded memory and a longer
	// inflate before a member.
	MaxCheckpoints int
}

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = 1_000_000
	}
	if l.MaxDirectoryBytes <= 0 {
		l.MaxDirectoryBytes = 64 << 20
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = 1100
	}
	if l.Window <= 0 {
		l.Window = 1 << 20
	}
	if l.CheckpointSpan <= 0 {
		l.CheckpointSpan = 4 << 20
	}
	if l.MaxCheckpoints <= 1 {
		l.MaxCheckpoints = 1024
	}
	return l
}

// Kind names an archive format.
type Kind uint8

const (
	Zip Kind = iota + 1
	Tar
	TarGz
)

func (k Kind) String() string {
	switch k {
	case Zip:
		return "zip"
	case Tar:
		return "tar"
	case TarGz:
		return "tar.gz"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// maxProblems bounds the problems remembered for Err.
const maxProblems = 16

// Archive is an opened archive: its listing and the way to read members.
// All methods are safe for concurrent use. A tar.gz Archive grows while
// its indexing pass runs; every other kind is complete when returned.
type Archive struct {
	r    io.ReaderAt
	size int64
	kind Kind
	lim  Limits

	mu       sync.RWMutex // protects the fields below
	entries  []*Entry     // live entries in first-seen order; a later duplicate replaces in place
	byName   map[string]int
	children map[string][]string // directory name ("" = root) -> child names, first-seen order
	problems []error             // the first maxProblems things skipped or wrong
	nproblem int
	fatal    error    // why the listing stopped early (nil when it reached the end)
	gz       *gzIndex // tar.gz checkpoints; nil for other kinds
	// damagedFrom is the stream offset from which a tar.gz's decompressed
	// bytes are known bad (a gzip member failed its CRC-32 or did not
	// decode); -1 when none are. See damagedLocked.
	damagedFrom int64

	grown    chan struct{} // closed (and cleared) when an entry is added; made by a waiting WaitLookup
	done     chan struct{} // closed when the listing is complete or has stopped
	progress atomic.Int64  // archive bytes the listing pass has consumed
}

func newArchive(r io.ReaderAt, size int64, kind Kind, lim Limits) *Archive {
	return &Archive{
		r: r, size: size, kind: kind, lim: lim.withDefaults(),
		byName:   map[string]int{},
		children: map[string][]string{},
		done:     make(chan struct{}),

		damagedFrom: -1,
	}
}

// damage marks a tar.gz's stream bad from offset from on: the gzip member
// that begins there failed its CRC-32 or did not decode, so none of its
// bytes can be trusted, though they inflated.
func (a *Archive) damage(from int64) {
	a.mu.Lock()
	a.damagedFrom = from
	a.mu.Unlock()
}

// damagedLocked reports whether e was read from, or has its bytes in, a
// part of the stream marked bad: such an entry is not listed and does not
// open (ErrChecksum).
func (a *Archive) damagedLocked(e *Entry) bool {
	if a.damagedFrom < 0 || !e.data.inStream {
		return false
	}
	// ownHdr is at or after hdrOff (a hard link's own header comes after its
	// target's), so it alone says whether the header was in the bad part.
	return e.data.ownHdr >= a.damagedFrom || e.Mode.Type() == 0 && e.data.dataOff+e.Size > a.damagedFrom
}

// errDamaged is Open's error for an entry damagedLocked reports.
func errDamaged(name string) error {
	return &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w: the gzip data holding it failed its CRC-32", ErrChecksum)}
}

// Kind reports the archive's format.
func (a *Archive) Kind() Kind { return a.kind }

// Done is closed when the listing is complete or has stopped on an error.
// For zip and tar it is closed before the opener returns.
func (a *Archive) Done() <-chan struct{} { return a.done }

// Progress reports how many archive bytes the listing pass has consumed, of
// the archive's size. For zip and tar it is the size once Done.
func (a *Archive) Progress() (done, total int64) { return a.progress.Load(), a.size }

// Err reports why the listing is incomplete or what was left out of it: nil
// when every member was listed. The listing itself stays usable.
func (a *Archive) Err() error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	errs := append([]error(nil), a.problems...)
	if a.nproblem > len(a.problems) {
		errs = append(errs, fmt.Errorf("and %d more problems", a.nproblem-len(a.problems)))
	}
	if a.fatal != nil {
		errs = append(errs, a.fatal)
	}
	return errors.Join(errs...)
}

// Len reports the number of entries listed so far, implicit directories included.
func (a *Archive) Len() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.entries)
}

// Entries returns a copy of the listing in archive order (a name replaced
// by a later duplicate keeps its first place), implicit directories included.
func (a *Archive) Entries() []Entry {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]Entry, 0, len(a.entries))
	for _, e := range a.entries {
		if !a.damagedLocked(e) {
			out = append(out, *e)
		}
	}
	return out
}

// Lookup returns the entry of a cleaned name. The root ("" or ".") is a
// directory that is not an entry: Lookup reports false for it.
func (a *Archive) Lookup(name string) (Entry, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	i, ok := a.byName[name]
	if !ok || a.damagedLocked(a.entries[i]) {
		return Entry{}, false
	}
	return *a.entries[i], true
}

// WaitLookup is Lookup for a listing that may still grow (a tar.gz whose
// pass runs): it returns the entry of name as soon as it is listed, and
// reports false only once the listing is complete (or has stopped, see
// Err) without it. It returns ctx's error if ctx ends first. A name later
// replaced by a duplicate is returned as first listed.
func (a *Archive) WaitLookup(ctx context.Context, name string) (Entry, bool, error) {
	for {
		a.mu.Lock()
		if i, ok := a.byName[name]; ok {
			e := *a.entries[i]
			bad := a.damagedLocked(a.entries[i])
			a.mu.Unlock()
			return e, !bad, nil
		}
		select {
		case <-a.done:
			a.mu.Unlock()
			return Entry{}, false, nil
		default:
		}
		if a.grown == nil {
			a.grown = make(chan struct{})
		}
		grown := a.grown
		a.mu.Unlock()
		select {
		case <-grown:
		case <-a.done:
		case <-ctx.Done():
			return Entry{}, false, ctx.Err()
		}
	}
}

// ReadDir returns the entries directly inside the directory dir ("" or "."
// for the root), sorted by name.
func (a *Archive) ReadDir(dir string) ([]Entry, error) {
	if dir == "." {
		dir = ""
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if dir != "" {
		i, ok := a.byName[dir]
		if !ok {
			return nil, &fs.PathError{Op: "readdir", Path: dir, Err: fs.ErrNotExist}
		}
		if !a.entries[i].IsDir() {
			return nil, &fs.PathError{Op: "readdir", Path: dir, Err: errors.New("not a directory")}
		}
	}
	names := a.children[dir]
	out := make([]Entry, 0, len(names))
	for _, n := range names {
		if e := a.entries[a.byName[n]]; !a.damagedLocked(e) {
			out = append(out, *e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// problem records something skipped; the listing goes on.
func (a *Archive) problem(err error) {
	a.mu.Lock()
	a.problemLocked(err)
	a.mu.Unlock()
}

func (a *Archive) problemLocked(err error) {
	if len(a.problems) < maxProblems {
		a.problems = append(a.problems, err)
	}
	a.nproblem++
}

// stop records why the listing ended early and marks it done.
func (a *Archive) finish(fatal error) {
	a.mu.Lock()
	if fatal != nil && a.fatal == nil {
		a.fatal = fatal
	}
	a.mu.Unlock()
	close(a.done)
}

// add puts e in the listing: the later of two equal names wins, parents
// are made as implicit directories, and a directory that holds members is
// never replaced by a non-directory. It reports false when e was refused.
func (a *Archive) add(e *Entry) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.grewLocked()
	if len(a.entries) >= a.lim.MaxEntries {
		return false
	}
	a.ensureParentsLocked(e.Name)
	if i, ok := a.byName[e.Name]; ok {
		old := a.entries[i]
		if old.IsDir() && !e.IsDir() && len(a.children[e.Name]) > 0 {
			a.problemLocked(fmt.Errorf("%w: %q: a non-directory cannot replace a directory holding members", ErrFormat, e.Name))
			return false
		}
		a.entries[i] = e
		return true
	}
	a.byName[e.Name] = len(a.entries)
	a.entries = append(a.entries, e)
	parent := parentOf(e.Name)
	a.children[parent] = append(a.children[parent], e.Name)
	return true
}

// grewLocked wakes the WaitLookups waiting for the listing to grow.
func (a *Archive) grewLocked() {
	if a.grown != nil {
		close(a.grown)
		a.grown = nil
	}
}

// ensureParentsLocked makes every ancestor of name a directory: a missing
// one is added as implicit, a non-directory is replaced (the later member,
// which needs it to be a directory, wins).
func (a *Archive) ensureParentsLocked(name string) {
	parent := parentOf(name)
	if parent == "" {
		return
	}
	if i, ok := a.byName[parent]; ok {
		if a.entries[i].IsDir() {
			return
		}
		a.problemLocked(fmt.Errorf("%w: %q: replaced by a directory because %q is inside it", ErrFormat, parent, name))
		a.entries[i] = &Entry{Name: parent, Mode: fs.ModeDir | 0o755, Implicit: true}
		return
	}
	a.ensureParentsLocked(parent)
	a.byName[parent] = len(a.entries)
	a.entries = append(a.entries, &Entry{Name: parent, Mode: fs.ModeDir | 0o755, Implicit: true})
	pp := parentOf(parent)
	a.children[pp] = append(a.children[pp], parent)
}

func parentOf(name string) string {
	d := path.Dir(name)
	if d == "." {
		return ""
	}
	return d
}

// entry returns the live entry of name for the package's own use.
func (a *Archive) entry(name string) (*Entry, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	i, ok := a.byName[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	if a.damagedLocked(a.entries[i]) {
		return nil, errDamaged(name)
	}
	return a.entries[i], nil
}
