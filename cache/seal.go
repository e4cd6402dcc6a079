package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// The seal: what a clean close vouches for, so the next Open can serve the
// chunks that were verified without checking them again.
//
// At a clean close (every writer stopped, the committer's last round done,
// the disk never failed) the store writes the file "seal": the index
// generation (bbolt's last transaction id), the data file's identity
// (inode, size, mtime, ctime) and the set of chunks verified in the closing
// session. Open reads the seal and removes it before anything is written;
// when the generation and the identity match, the chunks it names that the
// index records are verified from the start (see chunkTable.markVerified),
// so a warm reopen serves them at disk speed and can hand the data file to
// the kernel (passthrough) at the first open. Any mismatch (a crash, which
// leaves no seal; a write to the index or the data file since; another
// file at the path) and the seal is ignored: every block is checked on its
// first read, as without a seal.
const sealName = "seal"

var sealMagic = []byte("rangefs-seal 1\n")

// sealID is what a seal must match: the index generation and the data
// file's identity.
type sealID struct {
	gen                    uint64
	ino                    uint64
	size, mtimeNs, ctimeNs int64
}

// indexGen returns the id of the index's last committed transaction.
func indexGen(db *bolt.DB) (gen uint64, err error) {
	err = db.View(func(tx *bolt.Tx) error { gen = uint64(tx.ID()); return nil })
	return gen, err
}

// writeSeal writes the seal of a clean close: the index generation, the data
// file's identity and the verified chunks. The committer has stopped.
func (s *store) writeSeal(verified bitset) error {
	gen, err := indexGen(s.db)
	if err != nil {
		return err
	}
	fi, err := os.Stat(s.dataPath)
	if err != nil {
		return err
	}
	id, ok := fileID(fi)
	if !ok {
		return nil // no identity to check on this system: no seal
	}
	id.gen = gen
	var b bytes.Buffer
	b.Write(sealMagic)
	for _, v := range []uint64{id.gen, id.ino, uint64(id.size), uint64(id.mtimeNs), uint64(id.ctimeNs), uint64(len(verified))} {
		b.Write(binary.BigEndian.AppendUint64(nil, v))
	}
	for i := range verified {
		b.Write(binary.BigEndian.AppendUint64(nil, verified[i].Load()))
	}
	tmp := filepath.Join(s.dir, sealName+".tmp")
	f, err := openFileNoFollow(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, sealName))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(s.dir)
}

// takeSeal reads and removes dir's seal, and returns the chunks it vouches
// for if it matches gen and the data file fi, else nil. It removes the seal
// in every case, before the caller writes anything, so a later crash can
// never leave one behind that looks valid.
func takeSeal(dir string, gen uint64, fi fs.FileInfo, words int) ([]uint64, error) {
	path := filepath.Join(dir, sealName)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cache: read seal: %w", err)
	}
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("cache: remove seal: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("cache: remove seal: %w", err)
	}
	id, ok := fileID(fi)
	if !ok || !bytes.HasPrefix(raw, sealMagic) {
		return nil, nil
	}
	raw = raw[len(sealMagic):]
	if len(raw) != 8*(6+words) {
		return nil, nil
	}
	u := func(k int) uint64 { return binary.BigEndian.Uint64(raw[8*k:]) }
	if u(0) != gen || u(1) != id.ino || int64(u(2)) != id.size || int64(u(3)) != id.mtimeNs || int64(u(4)) != id.ctimeNs || int(u(5)) != words {
		return nil, nil
	}
	out := make([]uint64, words)
	for i := range out {
		out[i] = u(6 + i)
	}
	return out, nil
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
