package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// row is one selectable unit of the suite; run returns one or more result rows.
type row struct {
	id    string
	tools []string      // binaries it runs: --only rclone selects every rclone row
	est   time.Duration // rough duration, for --list and the banner
	run   func(ctx context.Context, b *bench) []result
}

// rcloneTunedDefault are the rclone mount flags of the tuned row, picked by measuring on
// this suite: first range requests of 1 MiB (doubling to 64 MiB while sequential) and no
// in-memory buffer or disk read-ahead, so a random 4 KiB read does not pull megabytes; and
// a 1 MiB kernel read-ahead for warm sequential reads. With these, a cold random read
// fetched about 0.9 MiB instead of 10.7 MiB, at an unchanged sequential rate. rclone mount
// reads one file over one connection, so no flag lifts its cold sequential rate above one
// connection's cap (--multi-thread-streams applies to copy, not to mount).
var rcloneTunedDefault = []string{
	"--vfs-read-chunk-size", "1M", "--vfs-read-chunk-size-limit", "64M",
	"--buffer-size", "0", "--vfs-read-ahead", "0", "--max-read-ahead", "1M",
}

// buildRows lists the whole suite in run order. Estimates assume this machine's rough
// ceilings (about 300 MB/s for a user-space downloader, 600 MB/s local disk).
func buildRows(cfg config) []row {
	size := cfg.size
	rate := float64(cfg.capRate)
	capped := func(conns int) float64 { // aggregate rate of n capped connections
		if rate <= 0 {
			return 300e6
		}
		return math.Min(float64(conns)*rate, 300e6)
	}
	const startup = 2 * time.Second
	var rows []row
	add := func(r row) { rows = append(rows, r) }

	add(row{id: "local-disk", tools: []string{"local"}, est: secondsAt(size, 600e6) + time.Duration(cfg.randomReads)*5*time.Millisecond + 2*startup,
		run: func(ctx context.Context, b *bench) []result { return b.localDisk(ctx) }})

	dl := func(id, tool, label string, conns int, argv func(url, out string) []string) {
		add(row{id: id, tools: []string{tool}, est: secondsAt(size, capped(conns)) + startup,
			run: func(ctx context.Context, b *bench) []result {
				return []result{b.download(ctx, secDownload, id, tool, label, argv, false)}
			}})
	}
	for _, j := range []int{1, 4, 8, 16} {
		dl(fmt.Sprintf("get-j%d", j), "rangefs", fmt.Sprintf("rangefs get -j%d", j), j, rangefsGet(j))
	}
	for _, x := range []int{1, 4, 8, 16} {
		dl(fmt.Sprintf("aria2c-x%d", x), "aria2c", fmt.Sprintf("aria2c -x%d -s%d -k1M", x, x), x, aria2c(x))
	}
	for _, n := range []int{4, 8, 16} {
		dl(fmt.Sprintf("axel-n%d", n), "axel", fmt.Sprintf("axel -n%d", n), n, axel(n))
	}
	dl("rclone-copy", "rclone", "rclone copyto --multi-thread-streams 8", 8, func(url, out string) []string {
		// ":http:" with --http-url is an on-the-fly remote (no config entry needed).
		// --multi-thread-cutoff 1M keeps it multi-stream for small --size runs too.
		return []string{"rclone", "copyto", ":http:" + urlBase(url), out, "--http-url", urlDir(url),
			"--multi-thread-streams", "8", "--multi-thread-cutoff", "1M", "-q"}
	})
	dl("curl", "curl", "curl", 1, curl)

	// Mounts. Phase estimates: random reads at about two chunk fetches each for rangefs,
	// rclone answering from the first bytes of its range (measured: tens of ms), httpdirfs
	// one 8 MiB segment per segment not yet fetched.
	oneConn := capped(1)
	segs := float64(size) / (8 << 20)
	httpdirfsSegs := segs * (1 - math.Pow(1-1/segs, float64(cfg.randomReads)))
	mnt := func(mt mountTool, coldRate, randomEach float64) {
		est := 3*startup + secondsAt(size, coldRate) + secondsAt(size, 400e6) +
			time.Duration(float64(cfg.randomReads)*randomEach*float64(time.Second))
		add(row{id: mt.id, tools: []string{mt.tool}, est: est,
			run: func(ctx context.Context, b *bench) []result {
				return b.mountRows(ctx, mt, secMountCold, false, true, true)
			}})
	}
	mnt(rangefsMount(), capped(8), 2*(1<<20)/oneConn)
	mnt(rcloneMount("mount-rclone", "rclone mount --vfs-cache-mode full", nil), oneConn, 0.05)
	mnt(rcloneMount("mount-rclone-tuned", "rclone mount full, tuned", cfg.rcloneTuned), oneConn, 0.05)
	mnt(httpdirfsMount(), 0.75*oneConn, httpdirfsSegs*(8<<20)/oneConn/math.Max(1, float64(cfg.randomReads)))

	rows = append(rows, clientRows(cfg)...)

	// No cap: straight to nginx, so the proxy's own copying does not cost CPU the tools need.
	nc := func(id, tool, label string, argv func(url, out string) []string) {
		add(row{id: id, tools: []string{tool}, est: secondsAt(size, 300e6) + startup,
			run: func(ctx context.Context, b *bench) []result {
				return []result{b.download(ctx, secNoCap, id, tool, label+" (no cap)", argv, true)}
			}})
	}
	nc("nocap-curl", "curl", "curl", curl)
	nc("nocap-aria2c-x8", "aria2c", "aria2c -x8 -s8 -k1M", aria2c(8))
	nc("nocap-get-j8", "rangefs", "rangefs get -j8", rangefsGet(8))
	rm := rangefsMount()
	rm.id = "nocap-mount-rangefs"
	add(row{id: rm.id, tools: []string{"rangefs"}, est: secondsAt(size, 300e6) + 2*startup,
		run: func(ctx context.Context, b *bench) []result {
			rs := b.mountRows(ctx, rm, secNoCap, true, false, false)
			for i := range rs {
				rs[i].Label = "rangefs mount -j8 cold cat (no cap)"
			}
			return rs
		}})
	rows = append(rows, budgetRows(cfg)...)
	if cfg.fleet > 0 {
		// Every mount reads the whole file: the page-cache-bound client side dominates.
		add(row{id: "fleet", tools: []string{"rangefs", "nginx"}, est: secondsAt(int64(cfg.fleet)*size, 300e6) + time.Duration(cfg.fleet+2)*startup,
			run: func(ctx context.Context, b *bench) []result { return b.fleet(ctx, cfg.fleet) }})
	}
	rows = append(rows, archiveRows(cfg)...)
	return rows
}

func rangefsGet(j int) func(url, out string) []string {
	return func(url, out string) []string {
		return []string{"rangefs", "get", "-o", out, "-j", itoa(j), "-q", url}
	}
}

func aria2c(x int) func(url, out string) []string {
	return func(url, out string) []string {
		return []string{"aria2c", "-x", itoa(x), "-s", itoa(x), "-k", "1M", "-o", out,
			"--allow-overwrite=true", "--auto-file-renaming=false",
			"--summary-interval=0", "--console-log-level=error", "--show-console-readout=false", url}
	}
}

func axel(n int) func(url, out string) []string {
	return func(url, out string) []string {
		return []string{"axel", "-n", itoa(n), "-q", "-o", out, url}
	}
}

func curl(url, out string) []string {
	return []string{"curl", "-sS", "-f", "-o", out, url}
}

func rangefsMount() mountTool {
	return mountTool{id: "mount-rangefs", tool: "rangefs", label: "rangefs mount -j8",
		argv: func(url, mnt, cache string, noPrefetch bool) []string {
			a := []string{"rangefs", "mount", "-j", "8", "--cache-dir", cache, "-q"}
			if noPrefetch {
				a = append(a, "--no-prefetch")
			}
			return append(a, url, mnt)
		}}
}

func rcloneMount(id, label string, extra []string) mountTool {
	return mountTool{id: id, tool: "rclone", label: label, dirURL: true,
		argv: func(url, mnt, cache string, _ bool) []string {
			a := []string{"rclone", "mount", ":http:", mnt, "--http-url", url,
				"--vfs-cache-mode", "full", "--cache-dir", cache, "-q"}
			return append(a, extra...)
		}}
}

func httpdirfsMount() mountTool {
	return mountTool{id: "mount-httpdirfs", tool: "httpdirfs", label: "httpdirfs --cache", dirURL: true,
		argv: func(url, mnt, cache string, _ bool) []string {
			return []string{"httpdirfs", "-f", "--cache", "--cache-location", cache, "--no-range-check", url, mnt}
		}}
}

// urlDir and urlBase split a file URL into its directory (with the slash) and base name.
func urlDir(u string) string  { return u[:strings.LastIndex(u, "/")+1] }
func urlBase(u string) string { return u[strings.LastIndex(u, "/")+1:] }

// matches reports whether selector tok picks r: its id, an id prefix ending at a '-'
// boundary ("get" picks get-j1..get-j16, "mount-rclone" picks both rclone mount rows), or
// a tool name ("rclone" picks every row that runs rclone).
func matches(tok string, r row) bool {
	tok = strings.TrimSpace(tok)
	return tok != "" && (r.id == tok || strings.HasPrefix(r.id, tok+"-") || slices.Contains(r.tools, tok))
}

// selectRows applies --only and --skip; a selector matching no row is an error, so a typo
// does not silently run nothing.
func selectRows(rows []row, only, skip []string) ([]row, error) {
	for _, tok := range append(slices.Clone(only), skip...) {
		if !slices.ContainsFunc(rows, func(r row) bool { return matches(tok, r) }) {
			return nil, fmt.Errorf("selector %q matches no row (see --list)", tok)
		}
	}
	var out []row
	for _, r := range rows {
		if len(only) > 0 && !slices.ContainsFunc(only, func(t string) bool { return matches(t, r) }) {
			continue
		}
		if slices.ContainsFunc(skip, func(t string) bool { return matches(t, r) }) {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}
