package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"rangefs/cache"
)

// progress prints download progress on stderr: a live line redrawn in place
// on a terminal, a plain line every few seconds otherwise (logs, CI).
type progress struct {
	once sync.Once
	done chan struct{}
	wg   sync.WaitGroup
}

func startProgress(w io.Writer, quiet bool, stats func() cache.Stats) *progress {
	p := &progress{done: make(chan struct{})}
	if quiet {
		return p
	}
	tty := isTerminal(w)
	every := 5 * time.Second
	if tty {
		every = 250 * time.Millisecond
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		start := time.Now()
		base := stats().BytesFetched
		rate := newRateMeter()
		rate.add(start, 0)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				if tty {
					fmt.Fprintln(w, progressLine(stats(), rate.rate(), time.Since(start)))
				}
				return
			case <-t.C:
				st := stats()
				rate.add(time.Now(), st.BytesFetched-base)
				line := progressLine(st, rate.rate(), time.Since(start))
				if tty {
					fmt.Fprintf(w, "\r%s\x1b[K", line)
				} else {
					fmt.Fprintln(w, line)
				}
			}
		}
	}()
	return p
}

// stop ends the display; safe to call more than once.
func (p *progress) stop() {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
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
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
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
