package archive

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
)

// checkpoint is a place a tar.gz member read can start inflating from: a
// deflate block boundary (input byte and bit), the output offset there,
// the gzip member's CRC so far, and the up to 32 KiB of output before it.
type checkpoint struct {
	out         int64
	in          int64
	bit         uint8
	memberStart int64
	crc         uint32
	window      []byte
}

// gzIndex holds a tar.gz archive's checkpoints, in output order.
type gzIndex struct {
	cps []checkpoint
}

// IndexTarGz starts the one sequential pass that lists a tar.gz archive
// and returns at once. The pass inflates the whole archive once, listing
// each member as soon as its data has gone by and keeping a checkpoint
// every Limits.CheckpointSpan of output; members already listed can be
// looked up and read while it runs. Done is closed when it ends, Err
// says why it stopped early (ctx cancelled, corrupt or truncated data, a
// gzip CRC mismatch), and Progress tells how far it got.
func IndexTarGz(ctx context.Context, r io.ReaderAt, size int64, lim Limits) *Archive {
	a := newArchive(r, size, TarGz, lim)
	a.gz = &gzIndex{}
	go a.indexTarGz(ctx)
	return a
}

func (a *Archive) indexTarGz(ctx context.Context) {
	src := bufio.NewReaderSize(io.NewSectionReader(a.r, 0, a.size), 256<<10)
	z := newInflater(src, 0, true)
	last, span := int64(0), a.lim.CheckpointSpan
	z.onBlock = func(bitPos, out int64) {
		if out-last < span {
			return
		}
		last = out
		cp := checkpoint{out: out, in: bitPos >> 3, bit: uint8(bitPos & 7), memberStart: z.memberStart, crc: z.crc, window: z.window()}
		a.mu.Lock()
		if len(a.gz.cps) >= a.lim.MaxCheckpoints {
			// Thin out: a new slice, so readers holding a checkpoint keep it.
			thin := make([]checkpoint, 0, a.lim.MaxCheckpoints)
			for i := 1; i < len(a.gz.cps); i += 2 {
				thin = append(thin, a.gz.cps[i])
			}
			a.gz.cps = thin
			span *= 2
		}
		a.gz.cps = append(a.gz.cps, cp)
		a.mu.Unlock()
	}
	s := &gzStream{z: z, ctx: ctx, a: a}
	err := a.listTar(ctx, s, -1, s)
	if s.zerr == nil && ctx.Err() == nil {
		// Inflate to the end so that every gzip trailer's CRC is checked,
		// also when the tar stopped early: what it listed is only known
		// good once the gzip member holding it has passed its check.
		_, derr := io.Copy(io.Discard, s)
		if err == nil {
			err = derr
		} else if derr != nil {
			err = errors.Join(err, derr)
		}
	}
	if zerr := s.zerr; errors.Is(zerr, ErrChecksum) || errors.Is(zerr, ErrFormat) && !errors.Is(zerr, errTruncated) {
		a.damage(z.memberStart)
	}
	if err != nil {
		err = fmt.Errorf("tar.gz: %w", err)
	}
	a.progress.Store(z.in)
	a.finish(err)
}

// gzStream feeds the pass's tar reader, counting output, watching ctx and
// the ratio limit, and recording progress.
type gzStream struct {
	z    *inflater
	ctx  context.Context
	a    *Archive
	n    int64
	mark int64
	zerr error // the inflater's error, io.EOF aside
}

func (s *gzStream) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	at := s.n
	n, err := s.z.Read(p)
	if err != nil && err != io.EOF && s.zerr == nil {
		s.zerr = err
	}
	if s.mark < 0 && len(p) == 512 && at%512 == 0 && n > 0 {
		s.mark = at
	}
	s.n += int64(n)
	s.a.progress.Store(s.z.in)
	if s.n > s.a.lim.MaxRatio*s.z.in+1<<20 {
		return n, fmt.Errorf("%w: %d bytes inflated from %d (ratio limit %d)", ErrLimit, s.n, s.z.in, s.a.lim.MaxRatio)
	}
	return n, err
}

func (s *gzStream) offset() int64      { return s.n }
func (s *gzStream) inputOffset() int64 { return s.z.in }
func (s *gzStream) markHeader()        { s.mark = -1 }
func (s *gzStream) header() int64      { return s.mark }

// checkpointBefore returns the last checkpoint at or before output offset
// off, or nil when the archive's start is the best place to start.
func (a *Archive) checkpointBefore(off int64) *checkpoint {
	a.mu.RLock()
	defer a.mu.RUnlock()
	cps := a.gz.cps
	i := sort.Search(len(cps), func(i int) bool { return cps[i].out > off })
	if i == 0 {
		return nil
	}
	return &cps[i-1]
}

// gzStreamAt returns the tar stream from output offset off: inflating
// from the nearest checkpoint before it and dropping what precedes off.
// The stream will need little of the archive past inEnd (see gzInputEnd),
// which the pass reader is told.
func (a *Archive) gzStreamAt(off, inEnd int64) (io.ReadCloser, error) {
	cp := a.checkpointBefore(off)
	start := int64(0)
	if cp != nil {
		start = cp.in
	}
	src, err := a.openPass(start, inEnd)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(io.NewSectionReader(src, start, a.size-start), 64<<10)
	var z *inflater
	if cp == nil {
		z = newInflater(br, 0, true)
	} else if z, err = resumeInflater(br, cp); err != nil {
		src.Close()
		return nil, err
	}
	if skip := off - z.wpos; skip > 0 {
		n, err := io.CopyN(io.Discard, z, skip)
		if err != nil {
			src.Close()
			if err == io.EOF {
				err = fmt.Errorf("%w: the tar stream ends at %d, before %d", ErrFormat, z.wpos-skip+n, off)
			}
			return nil, err
		}
	}
	return struct {
		io.Reader
		io.Closer
	}{z, src}, nil
}

// passSlack is how much more input a member's reader may need than the
// pass had read when it listed the member: the inflater decodes up to its
// 64 KiB ring ahead of what it returns, and a deflate block header or two.
const passSlack = 64<<10 + 1<<10

// gzInputEnd bounds the archive bytes a read of the tar stream up to
// output offset end needs: from the input the pass had read when it listed
// the member (Entry data limit), or, in an index that does not record it,
// the first checkpoint at or past end.
func (a *Archive) gzInputEnd(snap Entry) int64 {
	if snap.data.limit > 0 {
		return min(a.size, snap.data.limit+passSlack)
	}
	end := snap.data.dataOff + snap.Size
	a.mu.RLock()
	defer a.mu.RUnlock()
	cps := a.gz.cps
	if i := sort.Search(len(cps), func(i int) bool { return cps[i].out >= end }); i < len(cps) {
		return min(a.size, cps[i].in+passSlack)
	}
	return a.size
}

func (a *Archive) openTarGzMember(snap Entry) (memberReader, error) {
	inEnd := a.gzInputEnd(snap)
	if snap.data.sparse {
		return a.sparseReader(snap, func(off int64) (io.ReadCloser, error) { return a.gzStreamAt(off, inEnd) }), nil
	}
	return &streamReader{
		size: snap.Size, window: max(a.lim.Window, 64<<10), jump: a.lim.CheckpointSpan,
		src: &gzMember{a: a, dataOff: snap.data.dataOff, size: snap.Size, inEnd: inEnd},
	}, nil
}

// gzMember reads a tar.gz member from its start or from a checkpoint
// inside it.
type gzMember struct {
	a             *Archive
	dataOff, size int64
	inEnd         int64 // gzInputEnd
}

func (g *gzMember) restartPoint(want int64) int64 {
	cp := g.a.checkpointBefore(g.dataOff + want)
	if cp == nil || cp.out <= g.dataOff {
		return 0
	}
	return cp.out - g.dataOff
}

func (g *gzMember) open(start int64) (io.ReadCloser, error) {
	rc, err := g.a.gzStreamAt(g.dataOff+start, g.inEnd)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, g.size-start), rc}, nil
}
