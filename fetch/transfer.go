package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// Fetch writes exactly the n bytes at [off, off+n) of the pinned version to w, in order.
// After a failure only the remainder is requested again; a failure that delivered less than
// MinProgress bytes counts toward MaxAttempts (or, with RetryUntilDeadline, retries go on
// until ctx's deadline). On error w may have received a prefix (never a byte of another
// version: every answer is checked against the pinned validators and size before its body
// is read). A write error from w is returned at once as *WriteError.
// Safe for concurrent use; memory use is one fixed buffer per call.
func (o *Object) Fetch(ctx context.Context, off, n int64, w io.Writer) error {
	if o.multi != nil {
		return o.multi.Fetch(ctx, off, n, w)
	}
	if off < 0 || n < 0 || off > o.Size-n {
		return fmt.Errorf("fetch: range [%d,+%d) outside a file of %d bytes", off, n, o.Size)
	}
	if n == 0 {
		return nil
	}
	pos, end := off, off+n
	var ir ifRangePolicy
	return o.c.retryLoop(ctx, "fetch", o.t, func(ctx context.Context) (bool, error) {
		want := end - pos
		if want == 0 {
			return true, nil // the previous attempt delivered everything, then failed
		}
		got, err := o.fetchAttempt(ctx, pos, want, w, &ir)
		pos += got
		return got >= min(want, o.c.o.MinProgress), err
	})
}

// ifRangePolicy decides whether an attempt of one Fetch sends If-Range. A server that cannot
// honour a failed If-Range may close the connection without any answer (nginx's slice module
// does, behind a cache holding slices of the old version): then a retry with If-Range would
// meet the same silence until the attempts run out, and the change would never be seen. So
// after an attempt with If-Range got no answer at all, the next one goes without it, once
// per Fetch. That is safe because every 206's validators and total are compared with the
// pinned ones anyway: a new version becomes ErrChanged, never bytes.
type ifRangePolicy struct {
	skipNext bool // the next attempt omits If-Range
	skipped  bool // an attempt already went without it
}

// send reports whether this attempt sends If-Range.
func (p *ifRangePolicy) send() bool {
	if p.skipNext {
		p.skipNext, p.skipped = false, true
		return false
	}
	return true
}

// noAnswer records that an attempt which sent If-Range got no response at all.
func (p *ifRangePolicy) noAnswer(err error) {
	if !p.skipped && closedBeforeAnswer(err) {
		p.skipNext = true
	}
}

// closedBeforeAnswer reports a connection the server closed or reset before any response.
func closedBeforeAnswer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// fetchAttempt sends one ranged GET for [off, off+n) and copies what arrives to w. ir (nil:
// always) says whether to send If-Range and learns when a request with it got no answer.
func (o *Object) fetchAttempt(ctx context.Context, off, n int64, w io.Writer, ir *ifRangePolicy) (int64, error) {
	c := o.c
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := c.newRequest(actx, http.MethodGet, o.t)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+n-1, 10))
	v := o.ifRange()
	withIfRange := v != "" && (ir == nil || ir.send())
	if withIfRange {
		req.Header.Set("If-Range", v)
	}
	resp, err := c.do(req, o.t)
	if err != nil {
		if withIfRange && ir != nil && ctx.Err() == nil {
			ir.noAnswer(err)
		}
		return 0, err
	}
	if err := o.checkRange(resp, off, n); err != nil {
		if resp.StatusCode == http.StatusOK {
			resp.Body.Close() // maybe the whole file: not worth draining
		} else {
			discardSmall(resp)
		}
		return 0, err
	}
	written, err := c.copyBody(ctx, cancel, resp.Body, n, w)
	if errors.Is(err, errStall) {
		c.stalled(resp, o.t)
	}
	err = o.t.secrets.sanitizeForeign(err)
	// Closing before EOF (a body longer than promised, or an error) makes the transport drop
	// the connection instead of reusing one whose framing we no longer trust.
	resp.Body.Close()
	return written, err
}

// checkRange validates the answer to "Range: bytes=off-(off+n-1)" before any byte of its body
// is used.
func (o *Object) checkRange(resp *http.Response, off, n int64) error {
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		// If-Range made the server send the whole (new) file, or it ignores Range.
		if why := o.changedBy(resp); why != "" {
			return fmt.Errorf("%w: %s (%s)", ErrChanged, why, o.t.redact)
		}
		return fmt.Errorf("%w: 200 (%s, length %d) to a Range request from %s", ErrRangeIgnored,
			resp.Header.Get("Content-Type"), resp.ContentLength, o.t.redact)
	case http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: 416 for bytes %d-%d of %d (Content-Range %q) from %s", ErrChanged,
			off, off+n-1, o.Size, resp.Header.Get("Content-Range"), o.t.redact)
	default:
		return o.statusError(resp)
	}
	if ce := contentEncoding(resp); ce != "" {
		return fmt.Errorf("%w: Content-Encoding %q on a range from %s", ErrEncoding, ce, o.t.redact)
	}
	if why := o.changedBy(resp); why != "" {
		return fmt.Errorf("%w: %s (%s)", ErrChanged, why, o.t.redact)
	}
	if isMultipart(resp) {
		return fmt.Errorf("%w: multipart answer to one range from %s", ErrBadRange, o.t.redact)
	}
	cr := resp.Header.Get("Content-Range")
	if cr == "" {
		return fmt.Errorf("%w: 206 without Content-Range from %s", ErrRangeIgnored, o.t.redact)
	}
	first, last, total, err := ParseContentRange(cr)
	if err != nil {
		return fmt.Errorf("%w: malformed Content-Range %q from %s", ErrBadRange, cr, o.t.redact)
	}
	if total != o.Size {
		return fmt.Errorf("%w: size %d, pinned %d (%s)", ErrChanged, total, o.Size, o.t.redact)
	}
	if first != off || last != off+n-1 {
		return fmt.Errorf("%w: asked bytes %d-%d, got %q from %s", ErrBadRange, off, off+n-1, cr, o.t.redact)
	}
	if resp.ContentLength >= 0 && resp.ContentLength < n {
		return fmt.Errorf("%w: Content-Length %d for a %d-byte range from %s", ErrBadRange, resp.ContentLength, n, o.t.redact)
	}
	return nil
}

// Stream copies the whole body of one plain GET to w: the fallback for servers that ignore
// Range (Ranges false) when the size is known. It checks status, encoding, validators and
// length. It retries only while nothing has been written; there is no resume.
func (o *Object) Stream(ctx context.Context, w io.Writer) error {
	var written int64
	return o.c.retryLoop(ctx, "stream", o.t, func(ctx context.Context) (bool, error) {
		n, err := o.streamAttempt(ctx, w)
		written += n
		if err != nil && written > 0 {
			err = &finalError{fmt.Errorf("stream broken after %d of %d bytes (no resume): %w", written, o.Size, err)}
		}
		return false, err
	})
}

func (o *Object) streamAttempt(ctx context.Context, w io.Writer) (int64, error) {
	c := o.c
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := c.newRequest(actx, http.MethodGet, o.t)
	if err != nil {
		return 0, err
	}
	resp, err := c.do(req, o.t)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		return 0, o.statusError(resp)
	case contentEncoding(resp) != "":
		return 0, fmt.Errorf("%w: Content-Encoding %q from %s", ErrEncoding, contentEncoding(resp), o.t.redact)
	case o.changedBy(resp) != "":
		return 0, fmt.Errorf("%w: %s (%s)", ErrChanged, o.changedBy(resp), o.t.redact)
	case resp.ContentLength >= 0 && resp.ContentLength != o.Size:
		return 0, &finalError{fmt.Errorf("fetch: %s answered %d bytes (%s), expected %d",
			o.t.redact, resp.ContentLength, resp.Header.Get("Content-Type"), o.Size)}
	}
	n, err := c.copyBody(ctx, cancel, resp.Body, o.Size, w)
	if errors.Is(err, errStall) {
		c.stalled(resp, o.t)
	}
	err = o.t.secrets.sanitizeForeign(err)
	if err == nil && resp.ContentLength < 0 {
		// Unknown length: the body must end exactly here.
		var one [1]byte
		if m, _ := io.ReadFull(resp.Body, one[:]); m > 0 {
			err = &finalError{fmt.Errorf("fetch: %s sent more than the expected %d bytes", o.t.redact, o.Size)}
		}
	}
	return n, err
}

// finalError marks an error that must not be retried whatever it wraps.
type finalError struct{ err error }

func (e *finalError) Error() string { return e.err.Error() }
func (e *finalError) Unwrap() error { return e.err }

// retryLoop runs attempt until it succeeds, fails permanently, the caller's ctx ends, or
// MaxAttempts consecutive attempts made no progress. attempt reports whether it made progress
// (which resets the count and the backoff). With RetryUntilDeadline and a ctx deadline, the
// deadline replaces MaxAttempts: the loop gives up, with the last error, only when too
// little time is left for another attempt.
func (c *Client) retryLoop(ctx context.Context, op string, t *target, attempt func(context.Context) (bool, error)) error {
	deadline, byDeadline := ctx.Deadline()
	byDeadline = byDeadline && c.o.RetryUntilDeadline
	failures := 0
	refusedOnly := op == "probe" && c.o.ProbeRefusedAttempts > 0
	for n := 1; ; n++ {
		progress, err := attempt(ctx)
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			// The caller gave up; make sure errors.Is sees that whatever the transport said.
			if !errors.Is(err, cerr) {
				err = fmt.Errorf("%w: %w", cerr, err)
			}
			return err
		}
		var fe *finalError
		if errors.As(err, &fe) || !retryable(err) {
			return err
		}
		if progress {
			failures = 0
		}
		failures++
		d := c.retryDelay(err, failures)
		if byDeadline {
			left := time.Until(deadline)
			if left < minAttemptTime {
				c.o.Logger.Warn("giving up at the deadline", "op", op, "url", t.redact, "attempts", n, "err", err.Error())
				return fmt.Errorf("%s %s: giving up at the deadline after %d attempts: %w", op, t.redact, n, err)
			}
			// Leave the last attempt at least half of what is left.
			d = min(d, left/2)
		} else if refusedOnly = refusedOnly && errors.Is(err, syscall.ECONNREFUSED); refusedOnly && n >= c.o.ProbeRefusedAttempts {
			return fmt.Errorf("%s %s: connection refused (%d attempts): %w", op, t.redact, n, err)
		} else if failures >= c.o.MaxAttempts {
			c.o.Logger.Warn("giving up", "op", op, "url", t.redact, "attempts", n, "err", err.Error())
			return fmt.Errorf("%s %s: giving up after %d attempts: %w", op, t.redact, n, err)
		}
		c.o.Logger.Debug("retrying", "op", op, "url", t.redact, "attempt", n, "delay", d, "err", err.Error())
		if c.o.Observer != nil {
			c.o.Observer.Retry(op)
		}
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
}

// minAttemptTime is the least time before a deadline worth another attempt: a dial and a
// request on loopback or a near server, not more.
const minAttemptTime = 20 * time.Millisecond

// copyBody copies exactly n bytes of body to w through one pooled buffer. A watchdog ends the
// attempt (via cancel, which aborts the blocked Read) when fewer than MinProgress bytes arrive
// within StallTimeout; time spent in w.Write or in the rate limiter is not held against the
// server. The loop does no per-byte work and starts no goroutine per Read: one watchdog
// goroutine and timer per attempt, a clock read and two atomic stores per buffer.
func (c *Client) copyBody(ctx context.Context, cancel context.CancelFunc, body io.Reader, n int64, w io.Writer) (written int64, err error) {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := *bp
	if c.limiter != nil {
		buf = buf[:c.limiter.chunk()]
	}

	stall, minProgress := c.o.StallTimeout, c.o.MinProgress
	var (
		deadline atomic.Int64 // UnixNano by which the current window must be complete
		paused   atomic.Bool  // in w.Write or the rate limiter
		stalled  atomic.Bool
		done     = make(chan struct{})
	)
	deadline.Store(time.Now().Add(stall).UnixNano())
	go func() {
		t := time.NewTimer(stall)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if paused.Load() {
				t.Reset(stall)
				continue
			}
			if left := time.Duration(deadline.Load() - time.Now().UnixNano()); left > 0 {
				t.Reset(left)
				continue
			}
			stalled.Store(true)
			cancel()
			return
		}
	}()
	defer close(done)

	var window int64
	for written < n {
		nr, er := body.Read(buf[:min(int64(len(buf)), n-written)])
		if nr > 0 {
			window += int64(nr)
			if window >= minProgress {
				deadline.Store(time.Now().Add(stall).UnixNano())
				window = 0
			}
			paused.Store(true)
			t0 := time.Now()
			if c.limiter != nil {
				if d := c.limiter.take(nr); d > 0 {
					if err := sleep(ctx, d); err != nil {
						return written, err
					}
				}
			}
			nw, ew := w.Write(buf[:nr])
			deadline.Add(int64(time.Since(t0)))
			paused.Store(false)
			if nw > nr || nw < 0 {
				nw, ew = 0, io.ErrShortWrite
			}
			written += int64(nw)
			if ew == nil && nw < nr {
				ew = io.ErrShortWrite
			}
			if ew != nil {
				return written, &WriteError{Err: ew}
			}
		}
		if er != nil {
			switch {
			case written == n:
				// Everything arrived; an error after the last byte (a reset instead of
				// a clean end) costs nothing but the connection.
			case stalled.Load():
				return written, errStall
			case er == io.EOF, errors.Is(er, io.ErrUnexpectedEOF):
				return written, fmt.Errorf("%w: %d of %d bytes", errShortBody, written, n)
			default:
				return written, er
			}
		}
	}
	return written, nil
}
