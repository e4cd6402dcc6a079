package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// ErrPieceHash: every mirror still in use served bytes of one piece that do not match the
// piece's published SHA-256. Nothing of that piece was written. Final.
var ErrPieceHash = errors.New("piece fails its published SHA-256 on every mirror")

// errBadPiece is what the piece writer returns when a piece fails its hash: the attempt ends
// and the piece is asked of another mirror.
var errBadPiece = errors.New("piece does not match its SHA-256")

// maxPieceLength bounds the one piece buffer a Fetch call holds.
const maxPieceLength = 64 << 20

// Pieces are the published SHA-256 hashes of a file's consecutive pieces (a Metalink's
// <pieces type="sha-256">): piece i is bytes [i*Length, min((i+1)*Length, size)).
type Pieces struct {
	Length int64
	SHA256 [][sha256.Size]byte
}

// MirrorOptions configure NewMirrors. The zero value is usable.
type MirrorOptions struct {
	// Pieces, if set, makes every Fetch verify whole pieces before writing any byte of them.
	Pieces *Pieces
	// Size, if > 0, is the size the mirrors must report (a Metalink's <size>).
	Size int64
	// SHA256 (hex), if set, is the whole file's published hash. It becomes the identity and
	// the validator of Object(), since the mirrors' own ETags differ.
	SHA256 string
	// Name, if set, is Object()'s suggested file name (a Metalink's file name).
	Name string
	// Logger receives a warning for each mirror dropped or demoted; nil = the first
	// Object's Client's logger.
	Logger *slog.Logger
}

// Mirrors is one remote file served by several URLs, read as one source. Each mirror's
// version is pinned by its own Probe (ETags differ between servers), and each is checked
// against it on every answer: a mirror whose version changes, or that fails for good, is
// dropped and the others go on. Each Fetch call is served by the mirror that has a free
// connection slot (its host's Connections), chosen at random weighted by the throughput it
// has shown, and fails over to another when its mirror errs or stalls, asking only for the
// remainder. With Pieces, a Fetch fetches whole pieces into one buffer, checks each against
// its hash and only then writes the part that was asked for: a bad piece is never written,
// it is fetched again from another mirror, and the mirror that served it is demoted.
//
// Without Pieces, a mirror serving other bytes under the same size cannot be detected.
//
// Fetch has cache.Source's contract. Safe for concurrent use.
type Mirrors struct {
	size   int64
	pieces *Pieces
	hash   string
	name   string
	log    *slog.Logger
	opts   Options // retry knobs, from the first mirror's Client
	bufs   sync.Pool

	mu       sync.Mutex // protects ms' mutable fields and wake
	ms       []*mirror
	wake     chan struct{} // closed (and replaced) when a slot frees or a mirror's state changes
	lastDrop error         // the error that dropped the latest mirror
}

// mirror is one source of a Mirrors. Fields after o are protected by Mirrors.mu.
type mirror struct {
	o     *Object
	conns int // most requests in flight to it

	inFlight  int
	rate      float64 // smoothed bytes/s of its attempts; 0 = not measured yet
	failures  int     // consecutive failed attempts
	coolUntil time.Time
	demoted   int    // pieces it served that failed their hash
	dropped   string // why it is no longer used; "" while in use
	bytes     int64  // body bytes received from it
}

// MirrorStat is a snapshot of one mirror.
type MirrorStat struct {
	URL       string  // redacted
	Bytes     int64   // body bytes received from it
	Rate      float64 // smoothed bytes/s per request; 0 = not measured
	Demotions int     // bad pieces it served
	Dropped   string  // why it was dropped; "" while in use
}

// NewMirrors makes one source of objs (Probe results of the same file on different
// servers, objs[0] the primary). Every mirror must report the same size (and o.Size, when
// set) and honour ranges; otherwise the error names the mirror.
func NewMirrors(objs []*Object, o MirrorOptions) (*Mirrors, error) {
	if len(objs) == 0 {
		return nil, errors.New("fetch: no mirrors")
	}
	size := objs[0].Size
	if o.Size > 0 {
		size = o.Size
	}
	for i, ob := range objs {
		switch {
		case ob.Size != size && o.Size > 0:
			return nil, fmt.Errorf("mirror %s is %d bytes, but the metalink says %d: not the same file", ob.URL(), ob.Size, size)
		case ob.Size != size:
			return nil, fmt.Errorf("mirror %s is %d bytes, but %s is %d: not the same file", ob.URL(), ob.Size, objs[0].URL(), size)
		case !ob.Ranges:
			return nil, fmt.Errorf("%w: mirror %s does not answer Range requests", ErrRangeIgnored, ob.URL())
		}
		for _, prev := range objs[:i] {
			if prev.Identity() == ob.Identity() {
				return nil, fmt.Errorf("mirror %s is given twice", ob.URL())
			}
		}
	}
	if p := o.Pieces; p != nil {
		want := int64(0)
		if p.Length > 0 {
			want = (size + p.Length - 1) / p.Length
		}
		switch {
		case p.Length <= 0:
			return nil, fmt.Errorf("fetch: piece length %d", p.Length)
		case p.Length > maxPieceLength:
			return nil, fmt.Errorf("pieces of %d bytes: more than the %d MiB buffered per connection", p.Length, maxPieceLength>>20)
		case int64(len(p.SHA256)) != want:
			return nil, fmt.Errorf("%d piece hashes for %d bytes in pieces of %d: want %d", len(p.SHA256), size, p.Length, want)
		}
	}
	ms := &Mirrors{size: size, pieces: o.Pieces, hash: strings.ToLower(o.SHA256), name: o.Name,
		log: o.Logger, opts: objs[0].c.o, wake: make(chan struct{})}
	if ms.log == nil {
		ms.log = ms.opts.Logger
	}
	if p := o.Pieces; p != nil {
		ms.bufs.New = func() any { b := make([]byte, p.Length); return &b }
	}
	for _, ob := range objs {
		ms.ms = append(ms.ms, &mirror{o: ob, conns: ob.c.o.Connections})
	}
	return ms, nil
}

// Size is the file size every mirror reported.
func (ms *Mirrors) Size() int64 { return ms.size }

// Len is the number of mirrors, dropped ones included.
func (ms *Mirrors) Len() int { return len(ms.ms) }

// Stats returns a snapshot of every mirror, in the order given to NewMirrors.
func (ms *Mirrors) Stats() []MirrorStat {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	out := make([]MirrorStat, len(ms.ms))
	for i, m := range ms.ms {
		out[i] = MirrorStat{URL: m.o.URL(), Bytes: m.bytes, Rate: m.rate, Demotions: m.demoted, Dropped: m.dropped}
	}
	return out
}

// Object returns an Object that stands for the whole set: the primary's URL, name and
// validators (with a SHA256, that hash is its identity and its only validator), Ranges
// true, and a Fetch that is the Mirrors'. Sources() tells how many mirrors it reads from.
func (ms *Mirrors) Object() *Object {
	v := *ms.ms[0].o
	v.Size, v.Ranges, v.multi = ms.size, true, ms
	if ms.name != "" {
		v.Name = sanitizeName(ms.name)
	}
	if ms.hash != "" {
		v.ETag, v.WeakETag, v.LastModified, v.Date, v.rawETag = `"sha-256:`+ms.hash+`"`, "", "", "", ""
		v.identity = "sha-256:" + ms.hash
	}
	return &v
}

// Fetch writes exactly the n bytes at [off, off+n) to w, in order, and returns nil only if
// all were written; on error w may have received a prefix, of verified pieces only when
// there are piece hashes. A remote-changed error comes back only when every mirror has been
// dropped and the last one changed.
func (ms *Mirrors) Fetch(ctx context.Context, off, n int64, w io.Writer) error {
	if off < 0 || n < 0 || off > ms.size-n {
		return fmt.Errorf("fetch: range [%d,+%d) outside a file of %d bytes", off, n, ms.size)
	}
	if n == 0 {
		return nil
	}
	pos, end := off, off+n
	var pw *pieceWriter
	if ms.pieces != nil {
		bp := ms.bufs.Get().(*[]byte)
		defer ms.bufs.Put(bp)
		pw = &pieceWriter{w: w, p: ms.pieces, size: ms.size, off: off, end: end, buf: *bp}
		pos = off / ms.pieces.Length * ms.pieces.Length
		end = min(ms.size, (end+ms.pieces.Length-1)/ms.pieces.Length*ms.pieces.Length)
	}
	deadline, byDeadline := ctx.Deadline()
	byDeadline = byDeadline && ms.opts.RetryUntilDeadline
	var (
		idle    int // consecutive attempts without progress
		badAt   = int64(-1)
		bad     map[*mirror]bool // mirrors that served a bad copy of the piece at badAt
		ifRange = map[*mirror]*ifRangePolicy{}
		lastErr error
	)
	for attempt := 1; pos < end; attempt++ {
		var exclude map[*mirror]bool
		if badAt == pos {
			exclude = bad
		}
		m, err := ms.acquire(ctx, exclude)
		if err != nil {
			if ctx.Err() != nil && lastErr != nil {
				return fmt.Errorf("%w: %w", err, lastErr)
			}
			return err
		}
		if ifRange[m] == nil {
			ifRange[m] = &ifRangePolicy{}
		}
		dst := w
		if pw != nil {
			pw.start(pos)
			dst = pw
		}
		want := end - pos
		t0 := time.Now()
		got, err := m.o.fetchAttempt(ctx, pos, want, dst, ifRange[m])
		advanced := got
		if pw != nil {
			advanced = pw.done
		}
		pos += advanced
		ms.release(m, got, time.Since(t0), err)
		if err == nil {
			continue
		}
		lastErr = err
		if cerr := ctx.Err(); cerr != nil {
			if !errors.Is(err, cerr) {
				err = fmt.Errorf("%w: %w", cerr, err)
			}
			return err
		}
		if errors.Is(err, errBadPiece) {
			i := pos / ms.pieces.Length
			if badAt != pos {
				badAt, bad = pos, map[*mirror]bool{}
			}
			bad[m] = true
			ms.demote(m, i)
			if ms.allExcluded(bad) {
				return fmt.Errorf("%w: piece %d (bytes %d-%d), last from %s", ErrPieceHash, i,
					pos, min(pos+ms.pieces.Length, ms.size)-1, m.o.URL())
			}
			continue
		}
		var we *WriteError
		if errors.As(err, &we) {
			return err
		}
		var fe *finalError
		if errors.As(err, &fe) || !retryable(err) {
			if ms.drop(m, err) == 0 {
				return err
			}
			continue
		}
		if advanced >= min(want, ms.opts.MinProgress) || (pw != nil && advanced > 0) {
			idle = 0
		} else {
			idle++
		}
		active, failing := ms.health(exclude)
		switch {
		case byDeadline && time.Until(deadline) < minAttemptTime:
			return fmt.Errorf("fetch from %d mirrors: giving up at the deadline after %d attempts: %w", active, attempt, err)
		case !byDeadline && idle >= ms.opts.MaxAttempts && failing:
			return fmt.Errorf("fetch from %d mirrors: giving up after %d attempts without progress: %w", active, idle, err)
		}
		ms.log.Debug("mirror attempt failed; asking another", "url", m.o.URL(), "err", err.Error())
	}
	return nil
}

// acquire waits until a mirror in use, not in exclude, has a free slot and is not cooling
// off after a failure, takes the slot and returns the mirror.
func (ms *Mirrors) acquire(ctx context.Context, exclude map[*mirror]bool) (*mirror, error) {
	for {
		ms.mu.Lock()
		now := time.Now()
		var healthy, failing []*mirror
		var best float64
		var wakeAt time.Time
		busyHealthy, usable := false, false
		for _, m := range ms.ms {
			if m.dropped == "" && !exclude[m] {
				usable = true
				busyHealthy = busyHealthy || m.failures == 0 && m.inFlight >= m.conns
			}
		}
		if !usable {
			lastDrop := ms.lastDrop
			ms.mu.Unlock()
			if lastDrop != nil && exclude == nil {
				return nil, fmt.Errorf("every mirror has been dropped, the last one for: %w", lastDrop)
			}
			return nil, fmt.Errorf("%w: no other mirror is left to ask", ErrPieceHash)
		}
		for _, m := range ms.ms {
			if m.dropped != "" || exclude[m] {
				continue
			}
			if m.inFlight >= m.conns {
				continue
			}
			if m.coolUntil.After(now) {
				if wakeAt.IsZero() || m.coolUntil.Before(wakeAt) {
					wakeAt = m.coolUntil
				}
				continue
			}
			best = max(best, m.rate)
			switch {
			case m.failures == 0:
				healthy = append(healthy, m)
			case !busyHealthy || m.inFlight == 0:
				// A failing mirror whose backoff is over is tried again, but while a
				// healthy one is only busy, by one request at a time: a mirror that
				// black-holes must not hold up every caller for a header timeout.
				failing = append(failing, m)
			}
		}
		cands := healthy
		if len(cands) == 0 {
			cands = failing
		}
		if len(cands) > 0 {
			m := pickWeighted(cands, best)
			m.inFlight++
			ms.mu.Unlock()
			return m, nil
		}
		wake := ms.wake
		ms.mu.Unlock()
		var timer *time.Timer
		var fire <-chan time.Time
		if !wakeAt.IsZero() {
			timer = time.NewTimer(time.Until(wakeAt))
			fire = timer.C
		}
		var err error
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if err != nil {
			return nil, err
		}
	}
}

// pickWeighted chooses a mirror at random, weighted by its measured throughput (one not
// measured yet counts as the best, so that it gets measured) and divided by 4 for each bad
// piece it served. Called with ms.mu held.
func pickWeighted(cands []*mirror, best float64) *mirror {
	if best <= 0 {
		best = 1
	}
	weights := make([]float64, len(cands))
	var total float64
	for i, m := range cands {
		w := m.rate
		if w <= 0 {
			w = best
		}
		for range min(m.demoted, 8) {
			w /= 4
		}
		weights[i] = w
		total += w
	}
	r := rand.Float64() * total
	for i, w := range weights {
		if r < w {
			return cands[i]
		}
		r -= w
	}
	return cands[len(cands)-1]
}

// release returns m's slot and records what the attempt showed: its throughput, and after
// a failure a backoff during which m is asked only if nothing else is free.
func (ms *Mirrors) release(m *mirror, got int64, d time.Duration, err error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m.inFlight--
	m.bytes += got
	if got >= 64<<10 && d > 0 {
		r := float64(got) / d.Seconds()
		if m.rate == 0 {
			m.rate = r
		} else {
			m.rate = 0.7*m.rate + 0.3*r
		}
	}
	switch {
	case err == nil:
		m.failures = 0
		m.coolUntil = time.Time{}
	case errors.Is(err, errBadPiece):
	default:
		m.failures++
		var se *StatusError
		// Half fixed, half jitter: a mirror that keeps failing is asked less and less often.
		d := backoff(ms.opts.RetryBase, ms.opts.RetryCap, m.failures)/2 +
			min(ms.opts.RetryCap, ms.opts.RetryBase<<min(m.failures-1, 20))/2
		if errors.As(err, &se) && se.retryAfter > 0 {
			d = se.retryAfter
		}
		m.coolUntil = time.Now().Add(d)
		if got >= ms.opts.MinProgress {
			m.failures = 1
		}
	}
	ms.signalLocked()
}

func (ms *Mirrors) signalLocked() {
	close(ms.wake)
	ms.wake = make(chan struct{})
}

// drop stops using m after a final error and returns how many mirrors are left.
func (ms *Mirrors) drop(m *mirror, err error) int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if m.dropped == "" {
		m.dropped = err.Error()
		ms.lastDrop = err
		if isChange(err) {
			ms.log.Warn("mirror dropped: its file changed; the other mirrors go on", "url", m.o.URL(), "err", err.Error())
		} else {
			ms.log.Warn("mirror dropped: it failed for good; the other mirrors go on", "url", m.o.URL(), "err", err.Error())
		}
		ms.signalLocked()
	}
	return ms.activeLocked()
}

// isChange reports an error meaning the pinned version is gone.
func isChange(err error) bool {
	var rc interface{ RemoteChanged() bool }
	return errors.As(err, &rc) && rc.RemoteChanged()
}

// demote records that m served a bad copy of piece i.
func (ms *Mirrors) demote(m *mirror, i int64) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m.demoted++
	ms.log.Warn("mirror served a piece that fails its SHA-256: demoted; fetching the piece from another mirror",
		"url", m.o.URL(), "piece", i, "bad_pieces", m.demoted)
	ms.signalLocked()
}

// health returns the mirrors in use and whether every one of them outside exclude has
// failed at least MaxAttempts times in a row.
func (ms *Mirrors) health(exclude map[*mirror]bool) (active int, allFailing bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	allFailing = true
	for _, m := range ms.ms {
		if m.dropped == "" {
			active++
			if !exclude[m] && m.failures < ms.opts.MaxAttempts {
				allFailing = false
			}
		}
	}
	return active, allFailing
}

func (ms *Mirrors) activeLocked() int {
	n := 0
	for _, m := range ms.ms {
		if m.dropped == "" {
			n++
		}
	}
	return n
}

// allExcluded reports whether every mirror in use is in bad.
func (ms *Mirrors) allExcluded(bad map[*mirror]bool) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, m := range ms.ms {
		if m.dropped == "" && !bad[m] {
			return false
		}
	}
	return true
}

// pieceWriter sits between one attempt's body and the caller's writer: it collects one
// whole piece in buf, checks its hash, and only then writes the part of it inside the
// caller's range [off, end). done counts the bytes of the pieces it passed in this attempt.
type pieceWriter struct {
	w        io.Writer
	p        *Pieces
	size     int64
	off, end int64
	buf      []byte

	at   int64 // file offset of buf[0], a piece boundary
	fill int64
	done int64
}

// start begins an attempt whose body starts at piece boundary pos.
func (pw *pieceWriter) start(pos int64) { pw.at, pw.fill, pw.done = pos, 0, 0 }

func (pw *pieceWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		plen := min(pw.p.Length, pw.size-pw.at)
		c := copy(pw.buf[pw.fill:plen], b)
		pw.fill += int64(c)
		b = b[c:]
		n += c
		if pw.fill < plen {
			break
		}
		i := pw.at / pw.p.Length
		if sha256.Sum256(pw.buf[:plen]) != pw.p.SHA256[i] {
			return n, errBadPiece
		}
		lo, hi := max(pw.off, pw.at), min(pw.end, pw.at+plen)
		if lo < hi {
			if _, err := pw.w.Write(pw.buf[lo-pw.at : hi-pw.at]); err != nil {
				return n, err
			}
		}
		pw.at += plen
		pw.fill = 0
		pw.done += plen
	}
	return n, nil
}

// HexSHA256 parses a 64-digit hex SHA-256.
func HexSHA256(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != sha256.Size {
		return h, fmt.Errorf("%q is not a SHA-256 (64 hex digits)", s)
	}
	copy(h[:], b)
	return h, nil
}
