package main

import (
	"encoding/csv"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Sections group rows in the tables and the chart.
const (
	secLocal     = "local"      // local-disk reference, page cache dropped
	secDownload  = "download"   // capped downloads
	secMountCold = "mount-cold" // sequential read through a fresh mount with an empty cache
	secMountWarm = "mount-warm" // sequential read after a remount on the full cache, page cache dropped
	secNoCap     = "nocap"      // no per-connection cap: the CPU ceiling
	secRandom    = "random"     // random 4 KiB reads
	secFleet     = "fleet"      // many mounts at once through the nginx slice cache
)

// result is one row of the report.
type result struct {
	ID      string // stable id, e.g. "aria2c-x8" or "mount-rclone/cold-cat"
	Section string
	Tool    string // family, for the chart colour: rangefs, aria2c, axel, curl, rclone, httpdirfs, local
	Label   string // what ran, in a few words

	Wall     time.Duration // sequential rows: tool wall time (downloads) or open-to-EOF (mounts)
	Bytes    int64         // bytes the client got
	RSSKiB   int64         // peak RSS of the tool's process (the mount daemon for mounts); 0 = n/a
	RSSUpper bool          // RSSKiB is only an upper bound (see rssFloor)
	CPU      time.Duration // user+system CPU of that process over its life; 0 = n/a
	Served   int64         // bytes the server side sent during the row
	Requests int64         // HTTP requests nginx logged during the row
	Conns    int64         // TCP connections during the row
	Verified bool          // sha256 (or every random read's content) matched
	Err      string        // "" or why the row failed
	Note     string        // extra facts (mount time, caveats)

	Reads    int           // random rows: reads done
	P50, P99 time.Duration // random rows: read latency percentiles
}

// MBps is the row's throughput in 10^6 bytes per second; 0 when not measured.
func (r result) MBps() float64 {
	if r.Wall <= 0 || r.Bytes <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Wall.Seconds() / 1e6
}

// setUsage records c's peak RSS and CPU time.
func (r *result) setUsage(c *child) {
	r.RSSKiB, r.RSSUpper = c.maxRSSKiB()
	r.CPU = c.cpu()
}

// ok is true when the row ran and its bytes were right.
func (r result) ok() bool { return r.Err == "" && r.Verified }

// status is the last column of a row: ok, a mismatch, or the failure.
func (r result) status() string {
	switch {
	case r.Err != "":
		return "failed: " + r.Err
	case !r.Verified:
		return "sha256 MISMATCH"
	}
	return "ok"
}

// servedPerRead is a random row's bytes served divided by its reads.
func (r result) servedPerRead() float64 {
	if r.Reads == 0 {
		return 0
	}
	return float64(r.Served) / float64(r.Reads)
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) }
func secs(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64)
}
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}

// mdCell makes a value safe inside a markdown table cell.
func mdCell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// writeMarkdown writes the sequential table and, when there are random rows, the
// random-read table. Rows keep the order they ran in.
func writeMarkdown(w io.Writer, rs []result) error {
	var seq, rnd []result
	for _, r := range rs {
		if r.Section == secRandom {
			rnd = append(rnd, r)
		} else {
			seq = append(seq, r)
		}
	}
	var b strings.Builder
	if len(seq) > 0 {
		b.WriteString("| row | what | wall s | MB/s | peak RSS MiB | CPU s | served MiB | requests | conns | result |\n")
		b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|---|\n")
		for _, r := range seq {
			rate, wall := "-", "-"
			if r.Err == "" {
				rate = strconv.FormatFloat(r.MBps(), 'f', 1, 64)
				wall = secs(r.Wall)
			}
			cpu := "-"
			if r.CPU > 0 {
				cpu = secs(r.CPU)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %d | %d | %s |\n",
				mdCell(r.ID), mdCell(r.Label), wall, rate, rssCell(r.RSSKiB, r.RSSUpper), cpu, mib(r.Served),
				r.Requests, r.Conns, mdCell(r.status()+noteSuffix(r.Note)))
		}
	}
	if len(rnd) > 0 {
		if len(seq) > 0 {
			b.WriteString("\n")
		}
		b.WriteString("| row | what | reads | p50 ms | p99 ms | served per read KiB | requests | peak RSS MiB | result |\n")
		b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|---|\n")
		for _, r := range rnd {
			p50, p99, per := "-", "-", "-"
			if r.Reads > 0 {
				p50, p99 = ms(r.P50), ms(r.P99)
				per = strconv.FormatFloat(r.servedPerRead()/1024, 'f', 1, 64)
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %d | %s | %s |\n",
				mdCell(r.ID), mdCell(r.Label), r.Reads, p50, p99, per, r.Requests,
				rssCell(r.RSSKiB, r.RSSUpper), mdCell(r.status()+noteSuffix(r.Note)))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// rssCell renders KiB as MiB; "≤" marks an upper bound.
func rssCell(kib int64, upper bool) string {
	if kib <= 0 {
		return "-"
	}
	s := strconv.FormatFloat(float64(kib)/1024, 'f', 1, 64)
	if upper {
		s = "≤" + s
	}
	return s
}

func noteSuffix(n string) string {
	if n == "" {
		return ""
	}
	return " (" + n + ")"
}

// csvHeader names the CSV columns; units are in the names.
var csvHeader = []string{
	"id", "section", "tool", "label", "wall_s", "bytes", "mb_per_s", "peak_rss_kib", "peak_rss_upper_bound", "cpu_s",
	"served_bytes", "requests", "connections", "verified", "reads", "p50_ms", "p99_ms",
	"served_per_read_bytes", "error", "note",
}

// writeCSV writes every row with raw numbers (no rounding beyond microseconds).
func writeCSV(w io.Writer, rs []result) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return err
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, r := range rs {
		rec := []string{
			r.ID, r.Section, r.Tool, r.Label,
			f(math.Round(r.Wall.Seconds()*1e6) / 1e6),
			strconv.FormatInt(r.Bytes, 10),
			f(math.Round(r.MBps()*1000) / 1000),
			strconv.FormatInt(r.RSSKiB, 10),
			strconv.FormatBool(r.RSSUpper),
			f(float64(r.CPU.Microseconds()) / 1e6),
			strconv.FormatInt(r.Served, 10),
			strconv.FormatInt(r.Requests, 10),
			strconv.FormatInt(r.Conns, 10),
			strconv.FormatBool(r.ok()),
			strconv.Itoa(r.Reads),
			f(float64(r.P50.Microseconds()) / 1000),
			f(float64(r.P99.Microseconds()) / 1000),
			f(math.Round(r.servedPerRead())),
			r.Err, r.Note,
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// toolColor gives each tool one colour; rangefs gets the loud one.
var toolColor = map[string]string{
	"rangefs":   "#d62728",
	"aria2c":    "#1f77b4",
	"axel":      "#9467bd",
	"curl":      "#7f7f7f",
	"rclone":    "#2ca02c",
	"httpdirfs": "#ff7f0e",
	"local":     "#17becf",
}

func colorOf(tool string) string {
	if c, ok := toolColor[tool]; ok {
		return c
	}
	return "#555555"
}

// sectionTitle heads a chart panel.
func sectionTitle(sec string) string {
	switch sec {
	case secLocal:
		return "Local disk reference (page cache dropped), MB/s"
	case secDownload:
		return "Downloads through the capped proxy, MB/s"
	case secMountCold:
		return "Sequential read through a mount, cold (empty cache), MB/s"
	case secMountWarm:
		return "Sequential read through a mount, warm (remounted on its cache, page cache dropped), MB/s"
	case secNoCap:
		return "No cap (CPU ceiling), MB/s"
	case secFleet:
		return "Fleet: mounts reading at once through the nginx slice cache, MB/s per mount (total row: all mounts)"
	case secRandom:
		return "Random 4 KiB reads: p50 (dark) and p99 (light) latency, ms, log scale"
	}
	return sec
}

// svg layout, in pixels.
const (
	svgWidth  = 1100
	svgLabelX = 8   // left edge of row labels
	svgBarX   = 360 // left edge of bars
	svgBarW   = 470 // longest bar
	svgRowH   = 22
	svgHeadH  = 30
)

// writeSVG draws one horizontal bar chart with a panel per section, each panel on its own
// scale (linear MB/s; log-scale latency for random reads), so 20 MB/s rows stay visible
// next to page-cache reads. Hand-written SVG: no plotting tool needed to rebuild it.
func writeSVG(w io.Writer, title string, rs []result) error {
	order := []string{secLocal, secDownload, secMountCold, secMountWarm, secNoCap, secFleet, secRandom}
	bySec := make(map[string][]result)
	for _, r := range rs {
		bySec[r.Section] = append(bySec[r.Section], r)
	}
	var body strings.Builder
	y := 40
	for _, sec := range order {
		rows := bySec[sec]
		if len(rows) == 0 {
			continue
		}
		y += 8
		fmt.Fprintf(&body, `<text x="%d" y="%d" class="head">%s</text>`+"\n", svgLabelX, y+14, esc(sectionTitle(sec)))
		y += svgHeadH
		if sec == secRandom {
			y = drawLatency(&body, rows, y)
		} else {
			y = drawRate(&body, rows, y)
		}
	}
	height := y + 16
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	b.WriteString(`<style>.head{font-weight:bold;font-size:13px}.val{fill:#222}.fail{fill:#999;font-style:italic}.title{font-size:15px;font-weight:bold}</style>` + "\n")
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", svgWidth, height)
	fmt.Fprintf(&b, `<text x="%d" y="24" class="title">%s</text>`+"\n", svgLabelX, esc(title))
	b.WriteString(body.String())
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func drawRate(b *strings.Builder, rows []result, y int) int {
	max := 0.0
	for _, r := range rows {
		if r.Err == "" && r.MBps() > max {
			max = r.MBps()
		}
	}
	for _, r := range rows {
		fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", svgLabelX, y+15, esc(clip(r.Label, 52)))
		if r.Err != "" || max == 0 {
			fmt.Fprintf(b, `<text x="%d" y="%d" class="fail">%s</text>`+"\n", svgBarX, y+15, esc(clip(r.status(), 70)))
			y += svgRowH
			continue
		}
		wpx := math.Max(1, r.MBps()/max*svgBarW)
		fmt.Fprintf(b, `<rect class="bar" x="%d" y="%d" width="%.1f" height="16" fill="%s"><title>%s</title></rect>`+"\n",
			svgBarX, y+3, wpx, colorOf(r.Tool), esc(r.ID))
		val := strconv.FormatFloat(r.MBps(), 'f', 1, 64)
		if !r.Verified {
			val += " (sha256 MISMATCH)"
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" class="val">%s</text>`+"\n", float64(svgBarX)+wpx+6, y+15, esc(val))
		y += svgRowH
	}
	return y
}

// drawLatency puts p50 and p99 on a log10 axis from the decade below the smallest to the
// decade above the largest value, so 50 µs page-cache hits and 500 ms cold fetches share
// one readable panel.
func drawLatency(b *strings.Builder, rows []result, y int) int {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range rows {
		if r.Err != "" || r.Reads == 0 {
			continue
		}
		for _, d := range []time.Duration{r.P50, r.P99} {
			v := math.Max(float64(d)/1e6, 0.001)
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0.01, 100
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	xOf := func(msv float64) float64 {
		v := math.Log10(math.Max(msv, math.Pow(10, dlo)))
		return float64(svgBarX) + (v-dlo)/(dhi-dlo)*svgBarW
	}
	for _, r := range rows {
		fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", svgLabelX, y+15, esc(clip(r.Label, 52)))
		if r.Err != "" || r.Reads == 0 {
			fmt.Fprintf(b, `<text x="%d" y="%d" class="fail">%s</text>`+"\n", svgBarX, y+15, esc(clip(r.status(), 70)))
			y += svgRowH
			continue
		}
		p50, p99 := float64(r.P50)/1e6, float64(r.P99)/1e6
		c := colorOf(r.Tool)
		fmt.Fprintf(b, `<rect class="bar" x="%d" y="%d" width="%.1f" height="8" fill="%s"><title>%s p50</title></rect>`+"\n",
			svgBarX, y+3, math.Max(1, xOf(p50)-svgBarX), c, esc(r.ID))
		fmt.Fprintf(b, `<rect class="bar" x="%d" y="%d" width="%.1f" height="8" fill="%s" fill-opacity="0.45"><title>%s p99</title></rect>`+"\n",
			svgBarX, y+11, math.Max(1, xOf(p99)-svgBarX), c, esc(r.ID))
		val := fmt.Sprintf("%s / %s ms, %.0f KiB served per read", trimMs(p50), trimMs(p99), r.servedPerRead()/1024)
		if !r.Verified {
			val += " (MISMATCH)"
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" class="val">%s</text>`+"\n", xOf(p99)+6, y+15, esc(val))
		y += svgRowH
	}
	// Decade ticks under the panel.
	for d := dlo; d <= dhi; d++ {
		x := xOf(math.Pow(10, d))
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ccc"/>`+"\n", x, y, x, y+5)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%s</text>`+"\n", x, y+16, esc(trimMs(math.Pow(10, d))))
	}
	return y + 20
}

func trimMs(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'g', 2, 64)
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
