package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"rangefs/cache"
)

// display shows download progress on stderr: on a terminal, one bar per
// active file (mpb), redrawn in place and fitted to the terminal's width;
// otherwise a plain line per file every few seconds (logs, CI). Either way a
// finished file gets a summary line with its time and average rate.
type display struct {
	w     io.Writer
	quiet bool
	p     *mpb.Progress // nil unless w is a terminal
	mu    sync.Mutex    // orders the plain lines of several files
	multi bool          // several files: plain lines carry the file's name
}

func newDisplay(w io.Writer, quiet, multi bool) *display {
	d := &display{w: w, quiet: quiet, multi: multi}
	if !quiet && isTerminal(w) {
		d.p = mpb.New(mpb.WithOutput(w), mpb.WithRefreshRate(200*time.Millisecond), mpb.WithAutoRefresh())
	}
	return d
}

// println prints a line above the bars (or plainly without them).
func (d *display) println(format string, args ...any) {
	line := fmt.Sprintf(format, args...) + "\n"
	if d.p != nil {
		if _, err := d.p.Write([]byte(line)); err == nil {
			return
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	io.WriteString(d.w, line)
}

// wait ends the display once every tracker has stopped.
func (d *display) wait() {
	if d.p != nil {
		d.p.Wait()
	}
}

// tracker is the progress of one file.
type tracker struct {
	d     *display
	name  string
	stats func() cache.Stats
	start time.Time
	base  int64 // BytesFetched when it started: a resume counts only new bytes
	bar   *mpb.Bar
	once  sync.Once
	done  chan struct{}
	wg    sync.WaitGroup
}

// track starts showing the progress of the file called name.
func (d *display) track(name string, stats func() cache.Stats) *tracker {
	t := &tracker{d: d, name: name, stats: stats, start: time.Now(), base: stats().BytesFetched, done: make(chan struct{})}
	if d.quiet {
		return t
	}
	rate := newRateMeter()
	rate.add(t.start, 0)
	var mu sync.Mutex // guards rate between the poller and the decorators
	last := stats()
	every := 5 * time.Second
	if d.p != nil {
		every = 200 * time.Millisecond
		t.bar = d.p.New(max(last.Size, 1), mpb.BarStyle().Lbound("[").Rbound("]").Filler("#").Tip("#").Padding("."),
			mpb.PrependDecorators(decor.Any(func(s decor.Statistics) string {
				return fitName(name, s.AvailableWidth/4) + " "
			})),
			mpb.AppendDecorators(decor.Any(func(s decor.Statistics) string {
				mu.Lock()
				defer mu.Unlock()
				return barText(last, rate.rate(), s.AvailableWidth-minBar)
			})),
			mpb.BarFillerClearOnComplete(),
			mpb.BarRemoveOnComplete(),
		)
		t.bar.SetCurrent(last.BytesPresent)
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-t.done:
				return
			case now := <-tick.C:
				st := stats()
				mu.Lock()
				rate.add(now, st.BytesFetched-t.base)
				last = st
				r := rate.rate()
				mu.Unlock()
				if t.bar != nil {
					t.bar.SetCurrent(min(st.BytesPresent, max(st.Size, 1)-1))
					continue
				}
				line := progressLine(st, r, now.Sub(t.start))
				if d.multi {
					line = name + ": " + line
				}
				d.mu.Lock()
				fmt.Fprintln(d.w, line)
				d.mu.Unlock()
			}
		}
	}()
	return t
}

// stop ends the file's display, without a summary; safe to call more than once.
func (t *tracker) stop() {
	t.once.Do(func() {
		close(t.done)
		t.wg.Wait()
		if t.bar != nil {
			t.bar.Abort(true)
			t.bar.Wait()
		}
	})
}

// finish ends the file's display with its summary line: where it went, its
// size, the real elapsed time and the average rate of what was fetched.
func (t *tracker) finish(out string) {
	t.stop()
	if t.d.quiet {
		return
	}
	t.d.println("rangefs: %s", summaryLine(out, t.stats(), t.base, time.Since(t.start)))
}

// summaryLine is the last word on a download. The rate is what this run
// fetched over the time it took, measured to the microsecond, so a fast
// download never reads "0 B/s in 0:00".
func summaryLine(out string, st cache.Stats, base int64, elapsed time.Duration) string {
	fetched := st.BytesFetched - base
	s := fmt.Sprintf("saved %s (%s) in %s", out, humanBytes(st.Size), humanDuration(elapsed))
	if fetched > 0 && elapsed > 0 {
		s += fmt.Sprintf(", %s/s average", humanBytes(int64(float64(fetched)/elapsed.Seconds())))
	}
	if fetched < st.Size {
		s += fmt.Sprintf("; %s fetched, the rest was already here", humanBytes(max(fetched, 0)))
	}
	return s
}

// humanDuration shows short times with sub-second precision: 0.042s, 3.5s, 1:15.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%.3fs", d.Seconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return clock(d)
}

// minBar is the least width left to the bar itself when the text fits.
const minBar = 12

// barText is what follows a bar: percentage, bytes, rate, ETA, connections,
// in the longest form that fits in width columns (a 60-column terminal gets
// a shorter one than a 200-column one; mpb truncates what still does not fit).
func barText(st cache.Stats, rate float64, width int) string {
	pct := 100.0
	if st.Size > 0 {
		pct = 100 * float64(st.BytesPresent) / float64(st.Size)
	}
	eta := "ETA --:--"
	if rate > 0 {
		eta = "ETA " + clock(time.Duration(float64(st.Size-st.BytesPresent)/rate*float64(time.Second)))
	}
	forms := []string{
		fmt.Sprintf("%5.1f%% %s / %s  %s/s  %s  %d conn",
			pct, humanBytes(st.BytesPresent), humanBytes(st.Size), humanBytes(int64(rate)), eta, st.Active),
		fmt.Sprintf("%5.1f%% %s/s %s", pct, humanBytes(int64(rate)), eta),
		fmt.Sprintf("%5.1f%% %s", pct, eta),
	}
	for _, f := range forms {
		if len(f) <= width {
			return f
		}
	}
	return fmt.Sprintf("%3.0f%%", pct)
}

// fitName shortens a file name to at most width columns (at least 8),
// keeping its end, where the extension and the distinguishing part usually are.
func fitName(name string, width int) string {
	width = max(width, 8)
	r := []rune(name)
	if len(r) <= width {
		return name
	}
	return "…" + string(r[len(r)-width+1:])
}

func progressLine(st cache.Stats, rate float64, elapsed time.Duration) string {
	pct := 100.0
	if st.Size > 0 {
		pct = 100 * float64(st.BytesPresent) / float64(st.Size)
	}
	eta := "ETA --:--"
	switch {
	case st.Size == st.BytesPresent:
		eta = "in " + clock(elapsed)
	case rate > 0:
		eta = "ETA " + clock(time.Duration(float64(st.Size-st.BytesPresent)/rate*float64(time.Second)))
	}
	bar := 20
	filled := int(pct / 100 * float64(bar))
	return fmt.Sprintf("[%s%s] %5.1f%% %s / %s  %s/s  %s  %d conn",
		strings.Repeat("#", filled), strings.Repeat(".", bar-filled), pct,
		humanBytes(st.BytesPresent), humanBytes(st.Size), humanBytes(int64(rate)), eta, st.Active)
}

// rateMeter averages throughput over the last few seconds, so the figure
// follows changes without jumping at every tick.
type rateMeter struct {
	times []time.Time
	bytes []int64
}

func newRateMeter() *rateMeter { return &rateMeter{} }

func (m *rateMeter) add(t time.Time, total int64) {
	m.times = append(m.times, t)
	m.bytes = append(m.bytes, total)
	for len(m.times) > 2 && t.Sub(m.times[0]) > 5*time.Second {
		m.times, m.bytes = m.times[1:], m.bytes[1:]
	}
}

func (m *rateMeter) rate() float64 {
	n := len(m.times)
	if n < 2 {
		return 0
	}
	dt := m.times[n-1].Sub(m.times[0]).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(m.bytes[n-1]-m.bytes[0]) / dt
}

func clock(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// humanBytes formats n in binary units: 512 B, 1.5 KiB, 200.0 MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// countingWriter counts bytes on their way to w; the count may be read concurrently.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
