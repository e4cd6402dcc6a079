package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Entry is one object cached under a root, for `rangefs cache`.
type Entry struct {
	ID      string // its directory name under the root
	URL     string // secret-free
	Size    int64
	Cached  int64 // bytes its index records (the ledger's count while in use)
	LastUse time.Time
	PID     int // the process holding it open, or 0
}

// peekLedger reads root's ledger without the lock and without rebuilding
// it; nil when there is none.
func peekLedger(root string) *ledger {
	b, err := os.ReadFile(filepath.Join(root, budgetDirName, ledgerName))
	if err != nil {
		return nil
	}
	l := &ledger{}
	if json.Unmarshal(b, l) != nil || l.Objects == nil {
		return nil
	}
	return l
}

// List returns every object cached under root, by ID.
func List(root string) ([]Entry, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	l := peekLedger(root)
	var out []Entry
	for _, de := range ents {
		name := de.Name()
		if !de.IsDir() || strings.HasPrefix(name, ".") || strings.Contains(name, ".removing-") {
			continue
		}
		dir := filepath.Join(root, name)
		e := Entry{ID: name}
		var lo *ledgerObject
		if l != nil {
			lo = l.Objects[name]
		}
		m, st, err := Inspect(dir)
		switch {
		case errors.Is(err, ErrLocked):
			var le *lockedError
			if errors.As(err, &le) {
				e.PID = le.pid
			}
			if lo != nil {
				e.URL, e.Size, e.Cached = lo.URL, lo.Size, lo.Bytes
			}
		case err != nil:
			continue // not a cache of ours, or unreadable: status says which
		default:
			e.URL, e.Size, e.Cached = m.URL, m.Size, st.BytesPresent
		}
		if lo != nil && lo.LastUse > 0 {
			e.LastUse = time.Unix(lo.LastUse, 0)
		} else if fi, err := os.Stat(filepath.Join(dir, indexName)); err == nil {
			e.LastUse = fi.ModTime()
		}
		out = append(out, e)
	}
	return out, nil
}

// Remove removes the objects named by ID or URL from root. An object in use
// by a running process is refused (with its PID); nothing else is touched.
func Remove(root string, idsOrURLs ...string) ([]Entry, error) {
	all, err := List(root)
	if err != nil {
		return nil, err
	}
	var removed []Entry
	var errs []error
	for _, arg := range idsOrURLs {
		found := false
		for _, e := range all {
			if e.ID != arg && e.URL != arg {
				continue
			}
			found = true
			if err := removeEntry(root, e); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, e)
		}
		if !found {
			errs = append(errs, fmt.Errorf("%s: no such object in %s", arg, root))
		}
	}
	return removed, errors.Join(errs...)
}

func removeEntry(root string, e Entry) error {
	err := withLedger(root, func(l *ledger) error {
		if err := removeObjectDir(filepath.Join(root, e.ID)); err != nil {
			return err
		}
		delete(l.Objects, e.ID)
		return nil
	})
	if errors.Is(err, ErrLocked) {
		return fmt.Errorf("%s (%s): %w", e.ID, e.URL, err)
	}
	return err
}

// Prune removes the objects not in use that were last used before
// olderThan ago (if olderThan > 0), then, least recently used first, more of
// them until root holds at most maxSize bytes (if maxSize > 0). It returns
// what it removed.
func Prune(root string, maxSize int64, olderThan time.Duration) ([]Entry, error) {
	all, err := List(root)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b Entry) int { return a.LastUse.Compare(b.LastUse) })
	var total int64
	for _, e := range all {
		total += e.Cached
	}
	var removed []Entry
	var errs []error
	for _, e := range all {
		if e.PID != 0 {
			continue
		}
		old := olderThan > 0 && time.Since(e.LastUse) > olderThan
		big := maxSize > 0 && total > maxSize
		if !old && !big {
			continue
		}
		if err := removeEntry(root, e); err != nil {
			errs = append(errs, err)
			continue
		}
		total -= e.Cached
		removed = append(removed, e)
	}
	return removed, errors.Join(errs...)
}

// RootUsage is what the ledger of root says: the bytes counted for every
// object, how many objects, and the smallest size limit of a running
// process (0: none). ok is false when root has no ledger (no budget ran).
func RootUsage(root string) (used int64, objects int, limit int64, ok bool) {
	l := peekLedger(root)
	if l == nil {
		return 0, 0, 0, false
	}
	for _, p := range l.Procs {
		if p.Limit > 0 && (limit == 0 || p.Limit < limit) {
			limit = p.Limit
		}
	}
	return l.total(), len(l.Objects), limit, true
}
