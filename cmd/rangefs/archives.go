package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"rangefs/fs"
)

// archiveConfig holds the --archives flag of mount.
type archiveConfig struct {
	Archives bool // show .zip, .tar, .tar.gz and .tgz files as directories of their members
}

// archiveFlags registers --archives on a mount's flag set.
func archiveFlags(f *pflag.FlagSet, c *archiveConfig) {
	f.BoolVar(&c.Archives, "archives", false, "show each .zip, .tar, .tar.gz and .tgz file as a directory of the same name holding its members (read in place, fetching only what is read)")
}

// archiveRoot is the mount's root with --archives applied: every archive
// file in it, and in every directory below it, becomes a directory. An
// archive's listing is kept in its object's cache directory, so that the
// next mount lists it with no fetch.
func archiveRoot(c *mountConfig, root fs.Dir, log *slog.Logger) fs.Dir {
	if !c.Archives {
		return root
	}
	return fs.WithArchives(root, fs.ArchiveOptions{OpTimeout: c.OpTimeout, Logger: log, IndexStore: archiveIndexStore})
}

// archiveIndexStore keeps the index of a cached file in its object's
// cache directory; other files keep theirs where they say (a File that is
// an fs.IndexStore), or nowhere.
func archiveIndexStore(f fs.File) fs.IndexStore {
	if cf, ok := fs.CacheFileOf(f); ok {
		return dirIndexStore(filepath.Dir(cf.DataPath()))
	}
	s, _ := f.(fs.IndexStore)
	return s
}

// dirIndexStore keeps archive indexes as files in an object's cache
// directory, named by the archive kind. Each is written whole and renamed
// into place, so a crash leaves the old index or the new one. fs checks
// that an index is of the object's current version before using it.
type dirIndexStore string

// maxIndexFile bounds what is read back: fs/archive refuses larger ones anyway.
const maxIndexFile = 256 << 20

func (d dirIndexStore) path(kind string) string {
	return filepath.Join(string(d), "archive-index."+kind)
}

func (d dirIndexStore) LoadIndex(kind string) ([]byte, error) {
	p := d.path(kind)
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxIndexFile {
		return nil, fmt.Errorf("%s: %d bytes, more than an index may be", p, fi.Size())
	}
	return os.ReadFile(p)
}

func (d dirIndexStore) SaveIndex(kind string, b []byte) error {
	tmp, err := os.CreateTemp(string(d), "archive-index.*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), d.path(kind))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
