package main

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sampleResults() []result {
	return []result{
		{ID: "local-disk", Section: secLocal, Tool: "local", Label: "local disk", Wall: 2 * time.Second, Bytes: 1 << 30, Verified: true, RSSKiB: 3072, RSSUpper: true},
		{ID: "get-j8", Section: secDownload, Tool: "rangefs", Label: "rangefs get -j8", Err: "rangefs binary ./bin/rangefs not found"},
		{ID: "aria2c-x8", Section: secDownload, Tool: "aria2c", Label: "aria2c -x8 -s8 -k1M", Wall: 4 * time.Second, Bytes: 800_000_000,
			RSSKiB: 20480, CPU: 1500 * time.Millisecond, Served: 800_000_000, Requests: 8, Conns: 8, Verified: true},
		{ID: "axel-n4", Section: secDownload, Tool: "axel", Label: `axel "quoted" | piped & <tagged>`, Wall: time.Second, Bytes: 100, Verified: false},
		{ID: "mount-rclone/cold-cat", Section: secMountCold, Tool: "rclone", Label: "rclone cold", Wall: 50 * time.Second, Bytes: 1 << 30, Verified: true, Note: "mounted in 0.10 s"},
		{ID: "mount-rclone/warm-cat", Section: secMountWarm, Tool: "rclone", Label: "rclone warm", Wall: 3 * time.Second, Bytes: 1 << 30, Verified: true},
		{ID: "mount-rclone/cold-random", Section: secRandom, Tool: "rclone", Label: "rclone cold", Reads: 200,
			P50: 1500 * time.Microsecond, P99: 700 * time.Millisecond, Served: 200 * 12 << 20, Verified: true},
		{ID: "mount-rangefs/cold-random", Section: secRandom, Tool: "rangefs", Label: "rangefs cold", Err: "mount: exited"},
	}
}

func TestWriteCSV(t *testing.T) {
	rs := sampleResults()
	var b bytes.Buffer
	if err := writeCSV(&b, rs); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse back: %v", err)
	}
	if len(recs) != len(rs)+1 {
		t.Fatalf("%d records, want header + %d", len(recs), len(rs))
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	for i, r := range rs {
		rec := recs[i+1]
		if len(rec) != len(csvHeader) {
			t.Fatalf("row %d has %d fields", i, len(rec))
		}
		if rec[col["id"]] != r.ID || rec[col["label"]] != r.Label || rec[col["error"]] != r.Err {
			t.Errorf("row %d = %q, lost id/label/error of %+v", i, rec, r)
		}
		if got, _ := strconv.ParseBool(rec[col["verified"]]); got != r.ok() {
			t.Errorf("row %s verified = %v, want %v", r.ID, got, r.ok())
		}
	}
	aria := recs[3]
	if aria[col["mb_per_s"]] != "200" || aria[col["cpu_s"]] != "1.5" || aria[col["wall_s"]] != "4" || aria[col["peak_rss_kib"]] != "20480" || aria[col["served_bytes"]] != "800000000" {
		t.Errorf("aria2c numbers = %q", aria)
	}
	rnd := recs[7]
	if rnd[col["p50_ms"]] != "1.5" || rnd[col["p99_ms"]] != "700" || rnd[col["served_per_read_bytes"]] != strconv.Itoa(12<<20) {
		t.Errorf("random row numbers = %q", rnd)
	}
}

func TestWriteSVG(t *testing.T) {
	rs := sampleResults()
	var b bytes.Buffer
	if err := writeSVG(&b, "title with <angle> & amp", rs); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML, every element closed, text escaped.
	dec := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	bars, texts := 0, []string{}
	var root string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, b.String())
		}
		switch v := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = v.Name.Local
			}
			if v.Name.Local == "rect" {
				for _, a := range v.Attr {
					if a.Name.Local == "class" && a.Value == "bar" {
						bars++
					}
					if a.Name.Local == "width" {
						if w, err := strconv.ParseFloat(a.Value, 64); err != nil || w < 0 || w > svgWidth {
							t.Errorf("rect width %q outside the canvas", a.Value)
						}
					}
				}
			}
		case xml.CharData:
			texts = append(texts, string(v))
		}
	}
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
	// One bar per successful rate row (local, aria2c, axel, two rclone), two per random row.
	if bars != 5+2 {
		t.Errorf("%d bars, want 7", bars)
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{"title with <angle> & amp", `axel "quoted" | piped & <tagged>`, "failed: rangefs binary", "200.0", "sha256 MISMATCH", "Downloads"} {
		if !strings.Contains(all, want) {
			t.Errorf("chart text lacks %q", want)
		}
	}
	// An empty run still draws a valid document.
	b.Reset()
	if err := writeSVG(&b, "empty", nil); err != nil || xml.Unmarshal(b.Bytes(), new(struct{})) != nil {
		t.Errorf("empty chart: %v\n%s", err, b.String())
	}
}

func TestWriteMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := writeMarkdown(&b, sampleResults()); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| aria2c-x8 | aria2c -x8 -s8 -k1M | 4.00 | 200.0 | 20.0 | 1.50 | 762.9 | 8 | 8 | ok |",
		"| local-disk | local disk | 2.00 | 536.9 | ≤3.0 |",
		"| get-j8 | rangefs get -j8 | - | - | - | - | 0.0 | 0 | 0 | failed: rangefs binary ./bin/rangefs not found |",
		`axel "quoted" \| piped`, // a pipe would split the cell
		"sha256 MISMATCH",
		"ok (mounted in 0.10 s)",
		"| mount-rclone/cold-random | rclone cold | 200 | 1.500 | 700.000 | 12288.0 |",
		"| p50 ms | p99 ms | served per read KiB |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// Each table row has as many cells as its table's header.
	header := 0
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			header = 0
			continue
		}
		cells := len(strings.Split(strings.ReplaceAll(line, `\|`, ""), "|")) - 2
		if header == 0 {
			header = cells
		} else if cells != header {
			t.Errorf("%d cells in %q, header has %d", cells, line, header)
		}
	}
}

func TestHeadlineRatios(t *testing.T) {
	rs := []result{
		{ID: "get-j8", Tool: "rangefs", Wall: 5 * time.Second, Bytes: 1e9, Verified: true},
		{ID: "aria2c-x8", Tool: "aria2c", Wall: 10 * time.Second, Bytes: 1e9, Verified: true},
		{ID: "mount-rangefs/cold-cat", Tool: "rangefs", Err: "boom"},
		{ID: "mount-rclone/cold-cat", Tool: "rclone", Wall: 50 * time.Second, Bytes: 1e9, Verified: true},
	}
	lines := headline(rs)
	joined := strings.Join(lines, "\n")
	if !strings.Contains(joined, "rangefs get -j8 vs aria2c -x8: 2.00x (200.0 vs 100.0 MB/s)") {
		t.Errorf("missing get ratio in %q", joined)
	}
	if strings.Contains(joined, "rclone") {
		t.Errorf("a failed rangefs row must not produce a ratio: %q", joined)
	}
}
