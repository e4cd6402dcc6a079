package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"rangefs/cache"
	"rangefs/fetch"
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
// archive keeps its index in its object's cache directory, so that the
// next mount lists it with no fetch, and its listing reads the headers it
// needs straight from the origin. Files of trees do both themselves
// (treeFile below); the files given by URL (cache files) are wrapped here,
// found by their probes.
func archiveRoot(c *mountConfig, root fs.Dir, probes map[string]probeResult, log *slog.Logger, indexing *fs.ArchiveIndexing) fs.Dir {
	if !c.Archives {
		return root
	}
	byURL := map[string]*fetch.Object{}
	for _, p := range probes {
		if p.obj != nil {
			byURL[p.obj.URL()] = p.obj
		}
	}
	return fs.WithArchives(&cachedArchives{Dir: root, byURL: byURL}, fs.ArchiveOptions{OpTimeout: c.OpTimeout, Logger: log, Indexing: indexing})
}

// cachedArchives is the root, with its cache files that are archives
// made archiveFiles.
type cachedArchives struct {
	fs.Dir
	byURL map[string]*fetch.Object
}

func (d *cachedArchives) List(ctx context.Context) ([]fs.Entry, error) {
	es, err := d.Dir.List(ctx)
	if err != nil {
		return nil, err
	}
	es = append([]fs.Entry(nil), es...)
	for i := range es {
		cf, ok := fs.CacheFileOf(es[i].File)
		if !ok || fs.ArchiveKind(es[i].Name) == 0 {
			continue
		}
		if o := d.byURL[cf.Meta().URL]; o != nil {
			es[i].File = &archiveFile{File: es[i].File, index: dirIndexStore(filepath.Dir(cf.DataPath())), src: o, size: cf.Meta().Size}
		}
	}
	return es, nil
}

// archiveFile is a cached remote file that keeps its archive index in its
// cache directory and reads small listing ranges straight from its source.
type archiveFile struct {
	fs.File
	index dirIndexStore
	src   cache.Source
	size  int64
}

var (
	_ fs.IndexStore  = (*archiveFile)(nil)
	_ fs.RangeReader = (*archiveFile)(nil)
	_ fs.IndexStore  = (*treeFile)(nil)
	_ fs.RangeReader = (*treeFile)(nil)
)

func (a *archiveFile) LoadIndex(kind string) ([]byte, error) { return a.index.LoadIndex(kind) }
func (a *archiveFile) SaveIndex(kind string, b []byte) error { return a.index.SaveIndex(kind, b) }
func (a *archiveFile) ReadRange(ctx context.Context, p []byte, off int64) (int, error) {
	return readRange(ctx, a.src, a.size, p, off)
}

// A tree file keeps its index in the cache directory its Open opened, and
// reads ranges from the object its probe found.
func (f *treeFile) LoadIndex(kind string) ([]byte, error) {
	s := f.slot.Load()
	if s == nil {
		return nil, fmt.Errorf("%w: not opened yet", iofs.ErrNotExist)
	}
	return dirIndexStore(s.dir).LoadIndex(kind)
}

func (f *treeFile) SaveIndex(kind string, b []byte) error {
	s := f.slot.Load()
	if s == nil {
		return errors.New("not opened yet")
	}
	return dirIndexStore(s.dir).SaveIndex(kind, b)
}

func (f *treeFile) ReadRange(ctx context.Context, p []byte, off int64) (int, error) {
	o := f.probed()
	if o == nil {
		return 0, errors.New("not probed yet")
	}
	return readRange(ctx, o, o.Size, p, off)
}

// readRange fetches p at off of a size-byte object with one ranged
// request, storing nothing.
func readRange(ctx context.Context, src cache.Source, size int64, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	w := &fixedWriter{p: p[:n]}
	if err := src.Fetch(ctx, off, n, w); err != nil {
		return w.n, err
	}
	if int64(w.n) != n {
		return w.n, fmt.Errorf("fetched %d bytes of %d at %d", w.n, n, off)
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// fixedWriter fills p and refuses more.
type fixedWriter struct {
	p []byte
	n int
}

func (w *fixedWriter) Write(b []byte) (int, error) {
	if len(b) > len(w.p)-w.n {
		return 0, errors.New("the source sent more than was asked")
	}
	w.n += copy(w.p[w.n:], b)
	return len(b), nil
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

// archiveIndexingXattr is the root attribute in which a mount shows its
// tar.gz indexing passes, running or failed, to `rangefs status`: a line
// per pass, "DONE TOTAL MEMBERS NAME ERR" with NAME and ERR quoted (ERR
// "" while the pass runs), then "more N" when N passes did not fit.
const archiveIndexingXattr = "archive_indexing"

// maxIndexingXattr keeps the attribute within what a getxattr may return
// (64 KiB).
const maxIndexingXattr = 60 << 10

func archiveIndexingXattrs(x *fs.ArchiveIndexing) []fs.Xattr {
	ps := x.Passes()
	if len(ps) == 0 {
		return nil
	}
	var b strings.Builder
	for i, p := range ps {
		msg := ""
		if p.Err != nil {
			msg = p.Err.Error()
		}
		line := fmt.Sprintf("%d %d %d %s %s\n", p.Done, p.Total, p.Members, strconv.Quote(p.Name), strconv.Quote(firstLine(msg, 300)))
		if b.Len()+len(line) > maxIndexingXattr {
			fmt.Fprintf(&b, "more %d\n", len(ps)-i)
			break
		}
		b.WriteString(line)
	}
	return []fs.Xattr{{Name: archiveIndexingXattr, Value: b.String()}}
}

// firstLine is s up to its first newline, cut to at most max bytes.
func firstLine(s string, max int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}

// archiveIndexingLines are the lines of `rangefs status MOUNTPOINT` for the
// passes the attribute archiveIndexingXattrs made describes:
//
//	archive NAME: indexing 123.4 MiB of 400.0 MiB (31%), 812 members
//	archive NAME: indexing failed at 1.0 MiB of 400.0 MiB (0%), 3 members: ERR
func archiveIndexingLines(v string) []string {
	var out []string
	for line := range strings.Lines(v) {
		line = strings.TrimSuffix(line, "\n")
		if n, ok := strings.CutPrefix(line, "more "); ok {
			out = append(out, "and "+n+" more archives being indexed")
			continue
		}
		var done, total int64
		var members int
		k, err := fmt.Sscanf(line, "%d %d %d ", &done, &total, &members)
		if err != nil || k != 3 {
			continue
		}
		rest := line
		for range 3 {
			_, rest, _ = strings.Cut(rest, " ")
		}
		qname, err := strconv.QuotedPrefix(rest)
		if err != nil {
			continue
		}
		name, _ := strconv.Unquote(qname)
		msg, _ := strconv.Unquote(strings.TrimPrefix(rest[len(qname):], " "))
		pct := 0.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		what := "indexing"
		if msg != "" {
			what = "indexing failed at"
		}
		s := fmt.Sprintf("archive %s: %s %s of %s (%.0f%%), %d members", name, what, humanBytes(done), humanBytes(total), pct, members)
		if msg != "" {
			s += ": " + msg
		}
		out = append(out, s)
	}
	return out
}
