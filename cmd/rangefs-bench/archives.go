package main

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"math"
	"os"
	"path/filepath"
	"time"

	"rangefs/cmd/internal/bytesize"
	"rangefs/fetch/fetchtest/content"
)

// The archive rows: rangefs mount --archives listing and reading members of
// a zip, a tar and a tar.gz served by nginx through the capped proxy, with
// the bytes counted at the proxy; and, side by side, fuse-zip and
// archivemount on top of a plain rangefs mount and of an httpdirfs mount.

const secArchive = "archive" // archives browsed in place: listing and member reads

// archiveSpec is one generated archive: count members of size bytes.
type archiveSpec struct {
	name   string
	count  int
	size   int
	middle int // the member read by the cat rows
}

var (
	benchZip   = archiveSpec{name: "bench-3000.zip", count: 3000, size: 105 << 10, middle: 1501}
	benchTar   = archiveSpec{name: "bench-2000.tar", count: 2000, size: 205 << 10, middle: 1000}
	benchTarGz = archiveSpec{name: "bench-256.tar.gz", count: 256, size: 1 << 20, middle: 128}
)

func (s archiveSpec) member(i int) string { return fmt.Sprintf("dir%02d/m%04d.bin", i%30, i) }

// memberData is member i's content: the pattern for stored members; for
// deflated zip members (every tenth) and tar.gz members, bytes of 6 bits
// (they compress to about three quarters, so inflating is real work).
func (s archiveSpec) memberData(i int, seed uint64) []byte {
	b := make([]byte, s.size)
	content.Fill(b, int64(i)<<32, seed)
	if s.compressed(i) {
		for j := range b {
			b[j] = 'A' + b[j]&0x3f
		}
	}
	return b
}

func (s archiveSpec) compressed(i int) bool {
	return s.name == benchTarGz.name || s.name == benchZip.name && i%10 == 0
}

// archiveRows are the archive rows. They run when selected (--only archive,
// or one of their ids): with them the default suite would pass its
// 15-minute budget. Estimates from a run on the 2-core dev VM: generating
// the archives (once per work dir) and the listings take seconds; the peers
// read whole archives, httpdirfs over one connection.
func archiveRows(cfg config) []row {
	if len(cfg.only) == 0 {
		return nil
	}
	rate := float64(cfg.capRate)
	if rate <= 0 {
		rate = 300e6
	}
	peerBytes := float64(int64(benchZip.count*benchZip.size) + int64(benchTar.count*benchTar.size))
	peers := time.Duration(1.5*(peerBytes/rate+peerBytes/math.Min(8*rate, 300e6))*float64(time.Second)) + 10*time.Second
	return []row{
		{id: "archive-zip", tools: []string{"rangefs"}, est: 15 * time.Second,
			run: func(ctx context.Context, b *bench) []result { return b.archiveZip(ctx) }},
		{id: "archive-tar", tools: []string{"rangefs"}, est: 15 * time.Second,
			run: func(ctx context.Context, b *bench) []result { return b.archiveTar(ctx) }},
		{id: "archive-targz", tools: []string{"rangefs"}, est: 20*time.Second + secondsAt(200<<20, math.Min(8*rate, 300e6)),
			run: func(ctx context.Context, b *bench) []result { return b.archiveTarGz(ctx) }},
		{id: "archive-peers", tools: []string{"fuse-zip", "archivemount"}, est: peers,
			run: func(ctx context.Context, b *bench) []result { return b.archivePeers(ctx) }},
	}
}

// ensureArchive writes s into the served directory unless it is there.
func (b *bench) ensureArchive(s archiveSpec) (string, error) {
	p := filepath.Join(filepath.Dir(b.data.path), s.name)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	fmt.Fprintf(b.log, "    generating %s (%d members of %s)\n", s.name, s.count, bytesize.Format(int64(s.size)))
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = s.write(bw, b.cfg.seed)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return p, os.Chmod(p, 0o644)
}

func (s archiveSpec) write(w io.Writer, seed uint64) error {
	mtime := time.Date(2024, 1, 2, 3, 4, 6, 0, time.UTC)
	switch filepath.Ext(s.name) {
	case ".zip":
		z := zip.NewWriter(w)
		for i := range s.count {
			m := zip.Store
			if s.compressed(i) {
				m = zip.Deflate
			}
			fw, err := z.CreateHeader(&zip.FileHeader{Name: s.member(i), Method: m, Modified: mtime})
			if err != nil {
				return err
			}
			if _, err := fw.Write(s.memberData(i, seed)); err != nil {
				return err
			}
		}
		return z.Close()
	case ".tar":
		return s.writeTar(w, seed, mtime)
	default:
		gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if err != nil {
			return err
		}
		if err := s.writeTar(gz, seed, mtime); err != nil {
			return err
		}
		return gz.Close()
	}
}

func (s archiveSpec) writeTar(w io.Writer, seed uint64, mtime time.Time) error {
	t := tar.NewWriter(w)
	for i := range s.count {
		if err := t.WriteHeader(&tar.Header{Name: s.member(i), Mode: 0o644, Size: int64(s.size), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := t.Write(s.memberData(i, seed)); err != nil {
			return err
		}
	}
	return t.Close()
}

// wantNames is how many names a listing of s shows: members and their directories.
func (s archiveSpec) wantNames() int { return s.count + min(s.count, 30) }

// daemon starts a FUSE daemon whose mount shows waitFor when ready.
func (b *bench) daemon(name string, argv []string, mnt, waitFor string, timeout time.Duration) (*child, error) {
	b.sup.addMount(mnt)
	c, err := b.sup.start(name, b.fixArgv(argv), b.work, b.logPath(name))
	if err != nil {
		b.sup.unmount(mnt, nil)
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		if c.exited() {
			b.sup.unmount(mnt, c)
			return nil, fmt.Errorf("%s exited before mounting: %s", name, c.failure())
		}
		if _, err := statWithin(waitFor, time.Until(deadline)); err == nil && isMounted(mnt) {
			return c, nil
		}
		if time.Now().After(deadline) {
			b.sup.unmount(mnt, c)
			return nil, fmt.Errorf("%s: %s did not appear within %v", name, waitFor, timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// listTree walks dir, bounded, and counts what it finds.
func (b *bench) listTree(ctx context.Context, dir string, kill func()) (int, time.Duration, error) {
	t0 := time.Now()
	n, err := bounded(ctx, b.seqTimeout(), kill, func(ctx context.Context) (int, error) {
		n := 0
		err := filepath.WalkDir(dir, func(p string, d iofs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if p != dir {
				n++
			}
			return nil
		})
		return n, err
	})
	return n, time.Since(t0), err
}

// catMember reads one member and checks it against its generated content.
func (b *bench) catMember(ctx context.Context, r *result, s archiveSpec, path string, kill func()) {
	t0 := time.Now()
	o, err := bounded(ctx, b.seqTimeout(), kill, func(ctx context.Context) (seqOutcome, error) {
		n, sum, err := readAndHash(ctx, path)
		return seqOutcome{n, sum}, err
	})
	r.Wall, r.Bytes = time.Since(t0), o.n
	if err != nil {
		r.Err = err.Error()
		return
	}
	want := crc32.Checksum(s.memberData(s.middle, b.cfg.seed), castagnoli)
	r.Verified = o.sum == fmt.Sprintf("%08x", want)
}

// archiveTimeout is how long reading all of s through the cap may take.
func (b *bench) archiveTimeout(s archiveSpec) time.Duration {
	rate := float64(b.cfg.capRate)
	if rate <= 0 {
		rate = 20e6
	}
	return time.Duration(3 * float64(int64(s.count)*int64(s.size)) / rate * float64(time.Second))
}

func pct(served, of int64) string {
	return fmt.Sprintf("%.2f%% of %s MiB", 100*float64(served)/float64(of), mib(of))
}

// archiveMount mounts the archive s with rangefs --archives --no-prefetch on cache.
func (b *bench) archiveMount(s archiveSpec, id, cache string) (*child, string, error) {
	mnt, err := b.freshDir("mnt", id)
	if err != nil {
		return nil, "", err
	}
	argv := []string{"rangefs", "mount", "-q", "--archives", "--no-prefetch", "--cache-dir", cache, b.dirURL(false) + s.name, mnt}
	c, err := b.daemon(id, argv, mnt, filepath.Join(mnt, s.name), b.cfg.mountTimeout)
	return c, mnt, err
}

// archiveListRows: a cold listing (fresh cache), a member read in the same
// mount, and, when remount is set, a listing after a remount on that cache.
// cache "" is a fresh cache removed afterwards.
func (b *bench) archiveListRows(ctx context.Context, s archiveSpec, id, target, cache string, remount bool) []result {
	base := result{Tool: "rangefs", Section: secArchive}
	if err := b.toolErr("rangefs"); err != nil {
		base.Err = err.Error()
	}
	list, cat := base, base
	list.ID, list.Label = id+"/list-cold", fmt.Sprintf("rangefs --archives: list %s, cold", s.name)
	cat.ID, cat.Label = id+"/cat-member", fmt.Sprintf("rangefs --archives: cat one %s member", bytesize.Format(int64(s.size)))
	out := []result{}
	fail := func(err error) []result {
		list.Err = err.Error()
		return append(out, list)
	}
	if base.Err != "" {
		return append(out, list)
	}
	p, err := b.ensureArchive(s)
	if err != nil {
		return fail(err)
	}
	fi, _ := os.Stat(p)
	if cache == "" {
		if cache, err = b.freshDir("cache", id); err != nil {
			return fail(err)
		}
		defer os.RemoveAll(cache)
	}
	snap := b.snapshot()
	c, mnt, err := b.archiveMount(s, id, cache)
	if err != nil {
		return fail(err)
	}
	kill := func() { b.sup.stop(c, 3*time.Second) }
	mounted := b.snapshot()
	n, wall, err := b.listTree(ctx, filepath.Join(mnt, s.name), kill)
	b.trafficNow(&list, mounted, false)
	list.Wall = wall
	if err != nil {
		list.Err = err.Error()
	}
	list.Verified = n == s.wantNames()
	list.Note = fmt.Sprintf("%d names; listing served %s (%s); mount probe %d bytes", n, pct(list.Served, fi.Size()), target, mounted.proxy.Served-snap.proxy.Served)
	s1 := b.snapshot()
	b.catMember(ctx, &cat, s, filepath.Join(mnt, s.name, s.member(s.middle)), kill)
	b.trafficNow(&cat, s1, false)
	b.sup.unmount(mnt, c)
	list.setUsage(c)
	cat.setUsage(c)
	out = append(out, list, cat)
	if !remount || ctx.Err() != nil {
		return out
	}
	re := base
	re.ID, re.Label = id+"/list-remount", fmt.Sprintf("rangefs --archives: list %s after a remount", s.name)
	c, mnt, err = b.archiveMount(s, id+"-re", cache)
	if err != nil {
		re.Err = err.Error()
		return append(out, re)
	}
	s2 := b.snapshot()
	n, re.Wall, err = b.listTree(ctx, filepath.Join(mnt, s.name), func() { b.sup.stop(c, 3*time.Second) })
	b.trafficNow(&re, s2, false)
	if err != nil {
		re.Err = err.Error()
	}
	re.Verified = n == s.wantNames()
	re.Note = fmt.Sprintf("%d names from the kept index; served %d bytes (target 0)", n, re.Served)
	b.sup.unmount(mnt, c)
	re.setUsage(c)
	return append(out, re)
}

func (b *bench) archiveZip(ctx context.Context) []result {
	return b.archiveListRows(ctx, benchZip, "archive-zip", "target ≤ 1%", "", false)
}

func (b *bench) archiveTar(ctx context.Context) []result {
	return b.archiveListRows(ctx, benchTar, "archive-tar", "target ≤ 2%", "", true)
}

// archiveTarGz: the indexing pass (a cold listing reads the whole archive
// once), then a member read from the middle after a remount on a fresh
// cache holding only the kept index: what it fetches is what it inflates.
func (b *bench) archiveTarGz(ctx context.Context) []result {
	s := benchTarGz
	r := result{Tool: "rangefs", Section: secArchive, ID: "archive-targz/cat-after-index",
		Label: "rangefs --archives: cat a 1 MiB tar.gz member, index kept, chunks not cached"}
	cache, err := b.freshDir("cache", "archive-targz")
	if err != nil {
		r.Err = err.Error()
		return []result{r}
	}
	defer os.RemoveAll(cache)
	out := b.archiveListRows(ctx, s, "archive-targz", "the indexing pass", cache, false)
	if len(out) < 2 || out[0].Err != "" || ctx.Err() != nil {
		return out
	}
	idx, _ := filepath.Glob(filepath.Join(cache, "*", "archive-index.tar.gz"))
	if len(idx) != 1 {
		r.Err = fmt.Sprintf("%d kept indexes after the pass, want 1", len(idx))
		return append(out, r)
	}
	fresh, err := b.freshDir("cache", "archive-targz-fresh")
	if err != nil {
		r.Err = err.Error()
		return append(out, r)
	}
	defer os.RemoveAll(fresh)
	obj := filepath.Join(fresh, filepath.Base(filepath.Dir(idx[0])))
	data, err := os.ReadFile(idx[0])
	if err == nil {
		err = os.MkdirAll(obj, 0o700)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(obj, filepath.Base(idx[0])), data, 0o600)
	}
	if err != nil {
		r.Err = err.Error()
		return append(out, r)
	}
	c, mnt, err := b.archiveMount(s, "archive-targz-cat", fresh)
	if err != nil {
		r.Err = err.Error()
		return append(out, r)
	}
	snap := b.snapshot()
	b.catMember(ctx, &r, s, filepath.Join(mnt, s.name, s.member(s.middle)), func() { b.sup.stop(c, 3*time.Second) })
	b.trafficNow(&r, snap, false)
	b.sup.unmount(mnt, c)
	r.setUsage(c)
	fi, _ := os.Stat(filepath.Join(filepath.Dir(b.data.path), s.name))
	ratio := float64(fi.Size()) / float64(int64(s.count)*int64(s.size))
	bound := int64(float64(4<<20+s.size)*ratio) + 2<<20 // one checkpoint span plus the member, compressed, plus chunk rounding
	r.Note = fmt.Sprintf("served %s MiB for a %s member; bound %s MiB (4 MiB span + member at ratio %.2f, + 2 chunks); index %s MiB",
		mib(r.Served), bytesize.Format(int64(s.size)), mib(bound), ratio, mib(int64(len(data))))
	if r.Served > bound {
		r.Note += "; OVER the bound"
	}
	return append(out, r)
}

// archivePeers: fuse-zip on the zip and archivemount on the tar, each on top
// of a plain rangefs mount and of an httpdirfs mount: mount, list, cat the
// same member; seconds and bytes served for the whole sequence.
func (b *bench) archivePeers(ctx context.Context) []result {
	var out []result
	for _, tool := range []string{"fuse-zip", "archivemount"} {
		s := benchZip
		if tool == "archivemount" {
			s = benchTar
		}
		for _, lower := range []string{"rangefs", "httpdirfs"} {
			r := result{Tool: tool, Section: secArchive, ID: "archive-peers/" + tool + "-on-" + lower,
				Label: fmt.Sprintf("%s on %s: mount, list %s, cat one member", tool, lower, s.name)}
			if err := b.toolErr(tool); err != nil {
				r.Err = "skipped: " + err.Error()
			} else if err := b.toolErr(lower); err != nil {
				r.Err = "skipped: " + err.Error()
			}
			if r.Err == "" {
				b.archivePeer(ctx, &r, tool, lower, s)
			}
			out = append(out, r)
			if ctx.Err() != nil {
				return out
			}
		}
	}
	return out
}

func (b *bench) archivePeer(ctx context.Context, r *result, tool, lower string, s archiveSpec) {
	if _, err := b.ensureArchive(s); err != nil {
		r.Err = err.Error()
		return
	}
	cache, err := b.freshDir("cache", r.ID)
	if err != nil {
		r.Err = err.Error()
		return
	}
	defer os.RemoveAll(cache)
	low, err := b.freshDir("mnt", r.ID+"-lower")
	if err != nil {
		r.Err = err.Error()
		return
	}
	var argv []string
	if lower == "rangefs" {
		argv = []string{"rangefs", "mount", "-q", "--no-prefetch", "--cache-dir", cache, b.dirURL(false) + s.name, low}
	} else {
		argv = httpdirfsMount().argv(b.dirURL(false), low, cache, true)
	}
	snap := b.snapshot()
	t0 := time.Now()
	lc, err := b.daemon(r.ID+"-lower", argv, low, filepath.Join(low, s.name), b.cfg.mountTimeout)
	if err != nil {
		r.Err = "lower mount: " + err.Error()
		return
	}
	defer b.sup.unmount(low, lc)
	up, err := b.freshDir("mnt", r.ID+"-upper")
	if err != nil {
		r.Err = err.Error()
		return
	}
	if tool == "fuse-zip" {
		argv = []string{"fuse-zip", "-f", "-r", filepath.Join(low, s.name), up}
	} else {
		argv = []string{"archivemount", "-f", "-o", "readonly", filepath.Join(low, s.name), up}
	}
	// archivemount reads the whole archive before it shows anything.
	uc, err := b.daemon(r.ID+"-upper", argv, up, filepath.Join(up, "dir00"), b.seqTimeout()+b.archiveTimeout(s))
	if err != nil {
		r.Err = "mount: " + err.Error()
		b.traffic(r, snap, false)
		return
	}
	kill := func() { b.sup.stop(uc, 3*time.Second) }
	mounted := time.Since(t0)
	n, lw, err := b.listTree(ctx, up, kill)
	if err != nil {
		r.Err = "list: " + err.Error()
	} else {
		b.catMember(ctx, r, s, filepath.Join(up, s.member(s.middle)), kill)
		r.Verified = r.Verified && n == s.wantNames()
	}
	catWall := r.Wall
	r.Wall = time.Since(t0)
	b.sup.unmount(up, uc)
	b.sup.unmount(low, lc)
	b.traffic(r, snap, false)
	r.setUsage(uc)
	fi, _ := os.Stat(filepath.Join(filepath.Dir(b.data.path), s.name))
	r.Note = fmt.Sprintf("mount %.2f s, list %.2f s (%d names), cat %.2f s; served %s", mounted.Seconds(), lw.Seconds(), n, catWall.Seconds(), pct(r.Served, fi.Size()))
}
