package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The ledger is the budget's record of a whole cache root, shared by every
// process that uses the root. It lives in <root>/.budget/:
//
//	lock         flock(2)ed exclusively for each read-modify-write (short:
//	             parse, update, rename; no network and no fsync inside)
//	ledger.json  per object (by directory name): URL, size, bytes charged,
//	             last use, and the process holding it open, if any; per
//	             process: its reserved-but-uncharged slab
//	procs/KEY    one file per live Budget, flock(2)ed for its lifetime, so
//	             that a crashed process is told from a live one by trying its
//	             lock (never by PID alone: PIDs are reused)
//
// The total a process checks its reservation against is the sum of every
// object's bytes and every live process's slab. Failure modes, all of them
// on the side of under-counting by a bounded amount or of serving uncached:
//   - A process killed between two ledger writes leaves its objects' bytes
//     as last written: chunks charged since then (at most one slab, see
//     slabMax) are not counted until the object is opened again, when its
//     bytes are recounted from the index (and the holes of chunks written
//     but never committed are punched).
//   - A ledger that cannot be parsed (a crash during a rename that was
//     never synced) is rebuilt from the objects' indexes, once.
//   - If the lock cannot be taken at all (a read-only root), reservations
//     fail and reads are served uncached; nothing is over-committed.
type ledger struct {
	Objects map[string]*ledgerObject `json:"objects"`
	Procs   map[string]*ledgerProc   `json:"procs"`
}

type ledgerObject struct {
	URL     string `json:"url,omitempty"`
	Size    int64  `json:"size"`
	Bytes   int64  `json:"bytes"`
	LastUse int64  `json:"last_use"` // unix seconds
	Holder  string `json:"holder,omitempty"`
}

type ledgerProc struct {
	PID   int   `json:"pid"`
	Slab  int64 `json:"slab"`
	Limit int64 `json:"limit,omitempty"` // its --cache-max-size, for status
}

const (
	budgetDirName = ".budget"
	ledgerName    = "ledger.json"
	ledgerLock    = "lock"
	procsDirName  = "procs"
)

func (l *ledger) total() int64 {
	var t int64
	for _, o := range l.Objects {
		t += o.Bytes
	}
	for _, p := range l.Procs {
		t += p.Slab
	}
	return t
}

func (l *ledger) object(name string) *ledgerObject {
	o := l.Objects[name]
	if o == nil {
		o = &ledgerObject{}
		l.Objects[name] = o
	}
	return o
}

// withLedger runs fn on the ledger of root under its lock and writes it back
// when fn returns nil.
func withLedger(root string, fn func(l *ledger) error) error {
	bdir := filepath.Join(root, budgetDirName)
	if err := os.MkdirAll(filepath.Join(bdir, procsDirName), 0o700); err != nil {
		return fmt.Errorf("cache budget: %w", err)
	}
	lf, err := openFileNoFollow(filepath.Join(bdir, ledgerLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("cache budget: %w", err)
	}
	defer lf.Close()
	if err := flockRetry(lf, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("cache budget: lock: %w", err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	l, err := readLedger(root)
	if err != nil {
		return err
	}
	if err := fn(l); err != nil {
		return err
	}
	return writeLedger(root, l)
}

func flockRetry(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// readLedger reads the ledger; a missing or unreadable one is rebuilt from
// the objects' indexes (the one time the root is scanned).
func readLedger(root string) (*ledger, error) {
	path := filepath.Join(root, budgetDirName, ledgerName)
	l := &ledger{}
	b, err := os.ReadFile(path)
	if err == nil && json.Unmarshal(b, l) == nil && l.Objects != nil {
		if l.Procs == nil {
			l.Procs = map[string]*ledgerProc{}
		}
		return l, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cache budget: %w", err)
	}
	return rebuildLedger(root), nil
}

// rebuildLedger counts what each object's index records. An object held
// open elsewhere is counted as its whole size would be too much; its bytes
// are taken as unknown (0) until its holder writes them.
func rebuildLedger(root string) *ledger {
	l := &ledger{Objects: map[string]*ledgerObject{}, Procs: map[string]*ledgerProc{}}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(root, e.Name())
		m, st, err := Inspect(dir)
		if err != nil {
			continue
		}
		var last int64
		if fi, err := os.Stat(filepath.Join(dir, indexName)); err == nil {
			last = fi.ModTime().Unix()
		}
		l.Objects[e.Name()] = &ledgerObject{URL: m.URL, Size: m.Size, Bytes: st.BytesPresent, LastUse: last}
	}
	return l
}

func writeLedger(root string, l *ledger) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	path := filepath.Join(root, budgetDirName, ledgerName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("cache budget: write ledger: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cache budget: write ledger: %w", err)
	}
	return nil
}

// procAlive reports whether the Budget with ledger key k still holds its
// lock file.
func procAlive(root, k string) bool {
	if strings.ContainsAny(k, "/\\") || k == "" {
		return false
	}
	f, err := os.OpenFile(filepath.Join(root, budgetDirName, procsDirName, k), os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// reclaimDead drops the slabs and holds of Budgets that are gone, and
// reports whether it dropped anything.
func reclaimDead(root string, l *ledger, me string) bool {
	dropped := false
	dead := map[string]bool{}
	for k := range l.Procs {
		if k != me && !procAlive(root, k) {
			dead[k] = true
			delete(l.Procs, k)
			os.Remove(filepath.Join(root, budgetDirName, procsDirName, k))
			dropped = true
		}
	}
	for _, o := range l.Objects {
		if o.Holder != "" && o.Holder != me {
			if _, live := l.Procs[o.Holder]; !live || dead[o.Holder] {
				o.Holder = ""
				dropped = true
			}
		}
	}
	return dropped
}
