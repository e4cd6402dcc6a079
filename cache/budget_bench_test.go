package cache

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// buildRoot makes a cache root of objects objects with records chunk
// records each, and the ledger that counts them, without fetching anything.
func buildRoot(tb testing.TB, objects, records int) (root string, m Meta) {
	tb.Helper()
	root = filepath.Join(tb.TempDir(), "root")
	m = testMeta(int64(records) * testChunk)
	proto := filepath.Join(tb.TempDir(), "proto")
	os.MkdirAll(proto, 0o700)
	db, err := bolt.Open(filepath.Join(proto, indexName), 0o600, nil)
	if err != nil {
		tb.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := writeMeta(tx, m); err != nil {
			return err
		}
		b := tx.Bucket(bucketChunks)
		b.FillPercent = 1
		for i := range int64(records) {
			if err := b.Put(chunkKey(i), []byte{1, 2, 3, 4}); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		tb.Fatal(err)
	}
	idx, err := os.ReadFile(filepath.Join(proto, indexName))
	if err != nil {
		tb.Fatal(err)
	}
	l := &ledger{Objects: map[string]*ledgerObject{}, Procs: map[string]*ledgerProc{}}
	os.MkdirAll(root, 0o700)
	for o := range objects {
		name := fmt.Sprintf("%032x", o)
		dir := filepath.Join(root, name)
		os.MkdirAll(dir, 0o700)
		if err := os.WriteFile(filepath.Join(dir, indexName), idx, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.Truncate(filepath.Join(dir, dataName), 0); err != nil && !os.IsNotExist(err) {
			tb.Fatal(err)
		}
		f, err := os.OpenFile(filepath.Join(dir, dataName), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			tb.Fatal(err)
		}
		f.Truncate(m.Size)
		f.Close()
		l.Objects[name] = &ledgerObject{URL: m.URL, Size: m.Size, Bytes: m.Size, LastUse: 1_760_000_000}
	}
	os.MkdirAll(filepath.Join(root, budgetDirName, procsDirName), 0o700)
	if err := writeLedger(root, l); err != nil {
		tb.Fatal(err)
	}
	return root, m
}

// BenchmarkBudgetStartup is a mount's start over a root of 1,000 objects of
// 1,000 chunk records each (1,000,000 records): open the budget (one
// ledger read, no directory scan) and open one object with its records and
// use stamps, then close both. The issue asks for under 1 s.
func BenchmarkBudgetStartup(b *testing.B) {
	root, m := buildRoot(b, 1000, 1000)
	dir := filepath.Join(root, fmt.Sprintf("%032x", 500))
	for b.Loop() {
		bud, err := NewBudget(root, BudgetOptions{MaxSize: 1 << 40})
		if err != nil {
			b.Fatal(err)
		}
		f, err := Open(dir, m, newFake(m.Size), Options{Root: root, Budget: bud})
		if err != nil {
			b.Fatal(err)
		}
		if f.Stats().Present != 1000 {
			b.Fatalf("present %d", f.Stats().Present)
		}
		f.Close()
		bud.Close()
	}
}

// The startup path never scans the root: with a ledger present, NewBudget
// takes the ledger's counts and reads no object's index (the ledger here
// says something no index says, and that is what the budget sees).
func TestBudgetStartupReadsLedgerOnly(t *testing.T) {
	root, _ := buildRoot(t, 3, 10)
	l, err := readLedger(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range l.Objects {
		o.Bytes = 12345
	}
	if err := writeLedger(root, l); err != nil {
		t.Fatal(err)
	}
	b := newBudgetT(t, root, BudgetOptions{MaxSize: 1 << 30})
	u, err := b.Usage()
	if err != nil || u.Objects != 3 || u.Used != 3*12345 {
		t.Fatalf("usage %+v, %v: want the ledger's 3 objects of 12345 bytes", u, err)
	}
	// Without a ledger the root is counted once from the indexes.
	os.Remove(filepath.Join(root, budgetDirName, ledgerName))
	u, err = b.Usage()
	if err != nil || u.Used != 3*10*testChunk {
		t.Fatalf("rebuilt usage %+v, %v: want %d", u, err, 3*10*testChunk)
	}
}
