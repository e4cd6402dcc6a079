package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"rangefs/fetch/fetchtest/content"
)

// mountTool describes one FUSE client under test.
type mountTool struct {
	id    string // row id, e.g. "mount-rclone"
	tool  string // binary family: rangefs, rclone, httpdirfs
	label string
	// dirURL: the tool mounts the directory listing (rclone, httpdirfs), not the file URL.
	dirURL bool
	// argv builds the foreground command line. noPrefetch asks for the variant used for
	// the cold random-read phase where the tool has one (rangefs --no-prefetch), so bytes
	// served per read measure the reads, not a background fill.
	argv func(url, mnt, cache string, noPrefetch bool) []string
}

// mounted is a live mount: its daemon, mountpoint and the test file inside it.
type mounted struct {
	dir   string
	file  string
	d     *child
	ready time.Duration // from exec to the file being visible with the right size
}

// mount starts mt's daemon on a fresh mountpoint and waits, bounded by --mount-timeout,
// until the test file shows up with its full size. The mountpoint is registered with the
// supervisor before the daemon starts, so cleanup covers a mount that half-happened.
func (b *bench) mount(mt mountTool, name, cache string, noPrefetch, direct bool) (*mounted, error) {
	url := b.url(direct)
	if mt.dirURL {
		url = b.dirURL(direct)
	}
	return b.mountURL(mt, name, cache, url, noPrefetch)
}

// mountURL is mount of any URL that shows the test file (the fleet mounts the slice cache).
func (b *bench) mountURL(mt mountTool, name, cache, url string, noPrefetch bool) (*mounted, error) {
	return b.mountClientFile(mt, name, cache, url, b.data.name, b.data.size, noPrefetch)
}

// unmount takes m down and waits for its daemon (bounded), then removes the empty
// mountpoint directory.
func (b *bench) unmount(m *mounted) {
	b.sup.unmount(m.dir, m.d)
	if !isMounted(m.dir) {
		os.Remove(m.dir)
	}
}

// statWithin stats path in a goroutine so a hung FUSE daemon cannot hang the driver; the
// goroutine ends when the daemon is killed.
func statWithin(path string, d time.Duration) (os.FileInfo, error) {
	type res struct {
		fi  os.FileInfo
		err error
	}
	ch := make(chan res, 1)
	go func() {
		fi, err := os.Stat(path)
		ch <- res{fi, err}
	}()
	if d < 100*time.Millisecond {
		d = 100 * time.Millisecond
	}
	select {
	case r := <-ch:
		return r.fi, r.err
	case <-time.After(d):
		return nil, fmt.Errorf("stat %s hung for %v", path, d)
	}
}

// seqOutcome is what a bounded sequential read returns.
type seqOutcome struct {
	n   int64
	sum string
}

// randOutcome is what a bounded random-read phase returns.
type randOutcome struct {
	lat []time.Duration
	ok  bool
}

// mountRows runs mt's phases and returns their rows:
//   - cold random: fresh cache, mount (noPrefetch variant), N random 4 KiB reads, unmount;
//   - cold cat: fresh cache, mount, read the whole file, unmount;
//   - warm (withWarm): remount on the cold-cat cache, drop the page cache, the same random
//     reads, drop the page cache again, read the whole file, unmount.
//
// Each row's served bytes cover its window; peak RSS is the daemon's of that mount.
func (b *bench) mountRows(ctx context.Context, mt mountTool, coldSec string, direct, withRandom, withWarm bool) []result {
	var out []result
	base := result{Tool: mt.tool}
	if err := b.toolErr(mt.tool); err != nil {
		base.Err = err.Error()
	}
	mk := func(suffix, section, label string) result {
		r := base
		r.ID, r.Section, r.Label = mt.id+"/"+suffix, section, label
		return r
	}
	offs := randomOffsets(b.cfg.randomReads, b.data.size, b.cfg.seed)
	doRandom := withRandom && b.cfg.randomReads > 0

	if doRandom {
		r := mk("cold-random", secRandom, mt.label+" cold")
		if mt.tool == "rangefs" {
			r.Label += " --no-prefetch"
		}
		if r.Err == "" {
			b.randomPhase(ctx, &r, mt, offs, true, direct)
		}
		out = append(out, r)
		if ctx.Err() != nil {
			return out
		}
	}

	cold := mk("cold-cat", coldSec, mt.label+" cold cat")
	// finish appends the cold row and, when the warm phase cannot run, its rows marked as
	// skipped, so every tool has the same rows in the table.
	finish := func(why string) []result {
		out = append(out, cold)
		if withWarm {
			w := mk("warm-cat", secMountWarm, mt.label+" warm cat")
			wr := mk("warm-random", secRandom, mt.label+" warm")
			if w.Err == "" {
				w.Err, wr.Err = why, why
			}
			out = append(out, w)
			if doRandom {
				out = append(out, wr)
			}
		}
		return out
	}
	if cold.Err != "" {
		return finish(cold.Err)
	}
	cache, err := b.freshDir("cache", mt.id)
	if err != nil {
		cold.Err = err.Error()
		return finish("skipped: no cold cache")
	}
	defer os.RemoveAll(cache)
	b.prewarmSource()
	s := b.snapshot()
	m, err := b.mount(mt, mt.id+"-cold", cache, false, direct)
	if err != nil {
		cold.Err = "mount: " + err.Error()
		b.traffic(&cold, s, direct)
		return finish("skipped: the cold mount failed")
	}
	cold.Note = fmt.Sprintf("mounted in %.2f s", m.ready.Seconds())
	b.catPhase(ctx, &cold, m)
	b.unmount(m)
	b.traffic(&cold, s, direct)
	cold.setUsage(m.d)
	if !withWarm {
		return append(out, cold)
	}
	if ctx.Err() != nil {
		return finish("skipped: interrupted")
	}
	out = append(out, cold)

	warm := mk("warm-cat", secMountWarm, mt.label+" warm cat")
	warmRnd := mk("warm-random", secRandom, mt.label+" warm")
	m, err = b.mount(mt, mt.id+"-warm", cache, false, direct)
	if err != nil {
		warm.Err = "remount: " + err.Error()
		warmRnd.Err = warm.Err
	} else {
		if doRandom {
			if err := b.dropCaches(); err != nil {
				warmRnd.Note = "page cache not dropped: " + err.Error()
			}
			s := b.snapshot()
			o, err := bounded(ctx, b.randomTimeout(), func() { b.sup.stop(m.d, 3*time.Second) },
				func(ctx context.Context) (randOutcome, error) {
					lat, ok, err := randomReads(ctx, m.file, offs, b.cfg.seed)
					return randOutcome{lat, ok}, err
				})
			fillRandom(&warmRnd, o.lat, o.ok, err)
			b.trafficNow(&warmRnd, s, direct)
		}
		if err := b.dropCaches(); err != nil {
			warm.Note = "page cache not dropped: " + err.Error()
		}
		s := b.snapshot()
		b.catPhase(ctx, &warm, m)
		b.unmount(m)
		b.traffic(&warm, s, direct)
		warm.setUsage(m.d)
		warmRnd.setUsage(m.d)
	}
	out = append(out, warm)
	if doRandom {
		out = append(out, warmRnd)
	}
	return out
}

// randomPhase is the cold random-read phase on a fresh cache of its own.
func (b *bench) randomPhase(ctx context.Context, r *result, mt mountTool, offs []int64, noPrefetch, direct bool) {
	cache, err := b.freshDir("cache", mt.id+"-rand")
	if err != nil {
		r.Err = err.Error()
		return
	}
	defer os.RemoveAll(cache)
	b.prewarmSource()
	s := b.snapshot()
	m, err := b.mount(mt, mt.id+"-rand", cache, noPrefetch, direct)
	if err != nil {
		r.Err = "mount: " + err.Error()
		b.traffic(r, s, direct)
		return
	}
	o, err := bounded(ctx, b.randomTimeout(), func() { b.sup.stop(m.d, 3*time.Second) },
		func(ctx context.Context) (randOutcome, error) {
			lat, ok, err := randomReads(ctx, m.file, offs, b.cfg.seed)
			return randOutcome{lat, ok}, err
		})
	b.unmount(m)
	b.traffic(r, s, direct)
	fillRandom(r, o.lat, o.ok, err)
	r.setUsage(m.d)
}

// catPhase reads the whole file through m, bounded by the sequential timeout; on timeout
// the daemon is killed so the read returns.
func (b *bench) catPhase(ctx context.Context, r *result, m *mounted) {
	t0 := time.Now()
	o, err := bounded(ctx, b.seqTimeout(), func() { b.sup.stop(m.d, 3*time.Second) },
		func(ctx context.Context) (seqOutcome, error) {
			n, sum, err := readAndHash(ctx, m.file)
			return seqOutcome{n, sum}, err
		})
	r.Wall, r.Bytes = time.Since(t0), o.n
	if err != nil {
		r.Err = err.Error()
		return
	}
	r.Verified = o.n == b.data.size && o.sum == b.data.check
	if !r.Verified {
		// Where: read again, still mounted, against the generator. Wrong bytes that
		// are there a second time are in what the mount serves, not in one read.
		r.Note = joinNote(r.Note, "wrong bytes: "+locateWrong(ctx, m.file, b.data.size, b.cfg.seed))
	}
}

// locateWrong reads path again and says which 64 KiB blocks differ from the generated
// content: how many, the first few offsets, and the length read.
func locateWrong(ctx context.Context, path string, size int64, seed uint64) string {
	f, err := os.Open(path)
	if err != nil {
		return "second read: " + err.Error()
	}
	defer f.Close()
	const blk = 64 << 10
	got, want := make([]byte, blk), make([]byte, blk)
	var bad []int64
	nbad := 0
	var off int64
	for off < size && ctx.Err() == nil {
		n, err := io.ReadFull(f, got)
		if n > 0 {
			content.Fill(want[:n], off, seed)
			if !bytes.Equal(got[:n], want[:n]) {
				if nbad++; len(bad) < 8 {
					bad = append(bad, off)
				}
			}
		}
		off += int64(n)
		if err != nil {
			break
		}
	}
	return fmt.Sprintf("second read of %d bytes: %d blocks of 64 KiB differ, first at %v", off, nbad, bad)
}

// trafficNow is traffic for a window that ends while a mount is still up: no waiting for
// the proxy to go idle (the daemon keeps its connections), just the counts so far.
func (b *bench) trafficNow(r *result, s snapshot, direct bool) {
	st, _, err := readLogFrom(b.nginx.logPath, s.logOff)
	if err == nil {
		r.Requests = st.Requests
	}
	b.servedSince(r, s, st, direct)
}
