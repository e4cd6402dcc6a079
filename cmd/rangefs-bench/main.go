// Command rangefs-bench measures rangefs against the tools people use today — aria2c,
// axel, curl, rclone (copy and mount) and httpdirfs — in one run on one server: a private
// nginx on loopback behind a pacing proxy that caps every TCP connection's rate. It prints
// a markdown table and writes results.md, results.csv and bench.svg into --out.
//
// Every process it starts is stopped by PID and every mount unmounted, also on failure,
// timeout or Ctrl-C; every wait is bounded. A peer that is missing or fails is reported in
// its row and the run goes on.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"rangefs/cmd/internal/bytesize"
)

// Exit codes.
const (
	exitOK          = 0
	exitSetupFailed = 1 // nginx, the proxy or the test file could not be set up
	exitUsage       = 2
	exitInterrupted = 130
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "rangefs-bench:", err)
		return exitUsage
	}
	rows, err := selectRows(buildRows(cfg), cfg.only, cfg.skip)
	if err != nil {
		fmt.Fprintln(stderr, "rangefs-bench:", err)
		return exitUsage
	}
	var total time.Duration
	for _, r := range rows {
		total += r.est
	}
	if cfg.list {
		for _, r := range rows {
			fmt.Fprintf(stdout, "%-22s ~%s\n", r.id, r.est.Round(time.Second))
		}
		fmt.Fprintf(stdout, "%-22s ~%s (%s file, %s per connection)\n", "total", total.Round(time.Second), bytesize.Format(cfg.size), formatRate(cfg.capRate))
		return exitOK
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	started := time.Now()
	fmt.Fprintf(stderr, "rangefs-bench: %d rows, estimated %s plus setup\n", len(rows), total.Round(time.Second))
	b, err := newBench(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "rangefs-bench:", err)
		return exitSetupFailed
	}
	closed := false
	defer func() {
		if !closed { // a panic: still stop everything
			b.close()
		}
	}()
	meta := runMeta{cfg: cfg, args: args, started: started, load0: loadavg(), sum: b.data.sum}
	meta.versions = toolVersions(b.rangefsBin)
	meta.commit = firstLine("git", "-C", filepath.Dir(b.rangefsBin), "log", "-1", "--format=%h %cs %s")

	var results []result
	for i, r := range rows {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(stderr, "[%d/%d] %s (~%s)\n", i+1, len(rows), r.id, r.est.Round(time.Second))
		for _, x := range r.run(ctx, b) {
			if ctx.Err() != nil && x.Err != "" {
				x.Err = "interrupted (" + x.Err + ")"
			}
			fmt.Fprintf(stderr, "    %s\n", oneLine(x))
			results = append(results, x)
		}
	}
	interrupted := ctx.Err() != nil
	b.close()
	closed = true
	meta.elapsed, meta.load1 = time.Since(started), loadavg()

	var md bytes.Buffer
	writeHeader(&md, meta, interrupted)
	rest, clients := splitClients(results)
	writeMarkdown(&md, rest)
	if len(clients) > 0 {
		md.WriteString("\n")
		writeClientTable(&md, clients)
	}
	if lines := headline(results); len(lines) > 0 {
		md.WriteString("\nRatios (rangefs vs peers, same run):\n\n")
		for _, l := range lines {
			md.WriteString("- " + l + "\n")
		}
	}
	stdout.Write(md.Bytes())
	if err := writeOutputs(cfg.outDir, md.Bytes(), meta, results); err != nil {
		fmt.Fprintln(stderr, "rangefs-bench:", err)
		return exitSetupFailed
	}
	fmt.Fprintf(stderr, "wrote %s, %s and %s in %s\n",
		filepath.Join(cfg.outDir, "results.md"), filepath.Join(cfg.outDir, "results.csv"),
		filepath.Join(cfg.outDir, "bench.svg"), meta.elapsed.Round(time.Second))
	if interrupted {
		return exitInterrupted
	}
	return exitOK
}

// oneLine is the progress line for a finished row.
func oneLine(r result) string {
	if r.Err != "" {
		return fmt.Sprintf("%-34s %s", r.ID, r.status())
	}
	if r.Section == secClients {
		return fmt.Sprintf("%-34s %7s s  served %7.0f KiB  %s", r.ID, secs(r.Wall), float64(r.Served)/1024, r.status()+noteSuffix(r.Note))
	}
	if r.Section == secRandom {
		return fmt.Sprintf("%-34s p50 %s ms  p99 %s ms  %.1f KiB/read  %s", r.ID, ms(r.P50), ms(r.P99), r.servedPerRead()/1024, r.status())
	}
	return fmt.Sprintf("%-34s %7s s  %8.1f MB/s  rss %s MiB  served %s MiB  %s", r.ID, secs(r.Wall), r.MBps(), rssCell(r.RSSKiB, r.RSSUpper), mib(r.Served), r.status())
}

// runMeta is what the report header says about the run.
type runMeta struct {
	cfg          config
	args         []string
	started      time.Time
	elapsed      time.Duration
	load0, load1 string
	sum          string
	versions     []string
	commit       string // git commit of the tree the rangefs binary sits in, when there is one
}

func writeHeader(w io.Writer, m runMeta, interrupted bool) {
	fmt.Fprintf(w, "# rangefs-bench results\n\n")
	if interrupted {
		fmt.Fprintf(w, "**Interrupted: the rows below are the ones that finished.**\n\n")
	}
	fmt.Fprintf(w, "- date: %s, run took %s\n", m.started.UTC().Format("2006-01-02 15:04 UTC"), m.elapsed.Round(time.Second))
	fmt.Fprintf(w, "- machine: %d cores (%s), kernel %s, %s\n", runtime.NumCPU(), cpuModel(), kernel(), runtime.Version())
	fmt.Fprintf(w, "- load average at start / end: %s / %s\n", m.load0, m.load1)
	fmt.Fprintf(w, "- file: %s of deterministic incompressible data, sha256 %s\n", bytesize.Format(m.cfg.size), m.sum)
	fmt.Fprintf(w, "- network: nginx on 127.0.0.1 behind a pacing proxy, %s per TCP connection, rtt %v\n", formatRate(m.cfg.capRate), m.cfg.rtt)
	fmt.Fprintf(w, "- command: `rangefs-bench %s`\n", strings.Join(m.args, " "))
	fmt.Fprintf(w, "- tools: %s\n", strings.Join(m.versions, "; "))
	if m.commit != "" && !strings.Contains(m.commit, "(") {
		fmt.Fprintf(w, "- rangefs binary's tree at commit: %s\n", m.commit)
	}
	fmt.Fprintln(w)
}

// writeOutputs writes results.md, results.csv and bench.svg into dir.
func writeOutputs(dir string, md []byte, m runMeta, rs []result) error {
	if err := os.WriteFile(filepath.Join(dir, "results.md"), md, 0o644); err != nil {
		return err
	}
	var c bytes.Buffer
	if err := writeCSV(&c, rs); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.csv"), c.Bytes(), 0o644); err != nil {
		return err
	}
	var s bytes.Buffer
	title := fmt.Sprintf("rangefs-bench %s: %s file, %s per connection, rtt %v, %d cores",
		m.started.UTC().Format("2006-01-02"), bytesize.Format(m.cfg.size), formatRate(m.cfg.capRate), m.cfg.rtt, runtime.NumCPU())
	if err := writeSVG(&s, title, rs); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "bench.svg"), s.Bytes(), 0o644)
}

// headline states rangefs's ratios against its peers for every pair that both ran
// successfully in this run.
func headline(rs []result) []string {
	by := make(map[string]result)
	for _, r := range rs {
		by[r.ID] = r
	}
	var out []string
	rate := func(a, b, what string) {
		x, y := by[a], by[b]
		if !x.ok() || !y.ok() || y.MBps() == 0 {
			return
		}
		out = append(out, fmt.Sprintf("%s: %.2fx (%.1f vs %.1f MB/s)", what, x.MBps()/y.MBps(), x.MBps(), y.MBps()))
	}
	rate("get-j8", "aria2c-x8", "rangefs get -j8 vs aria2c -x8")
	rate("get-j16", "aria2c-x16", "rangefs get -j16 vs aria2c -x16")
	rate("nocap-get-j8", "nocap-aria2c-x8", "no cap: rangefs get -j8 vs aria2c -x8")
	rate("mount-rangefs/cold-cat", "aria2c-x8", "rangefs mount cold read vs aria2c -x8 download")
	rate("mount-rangefs/cold-cat", "mount-rclone/cold-cat", "rangefs mount cold read vs rclone mount (defaults)")
	rate("mount-rangefs/cold-cat", "mount-rclone-tuned/cold-cat", "rangefs mount cold read vs rclone mount (tuned)")
	rate("mount-rangefs/cold-cat", "mount-httpdirfs/cold-cat", "rangefs mount cold read vs httpdirfs")
	rate("mount-rangefs/warm-cat", "local-disk", "rangefs mount warm read vs local disk")
	rate("mount-rangefs/warm-cat", "mount-rclone/warm-cat", "rangefs mount warm read vs rclone mount (defaults)")
	rate("mount-rangefs/warm-cat", "mount-httpdirfs/warm-cat", "rangefs mount warm read vs httpdirfs")
	lat := func(a, b, what string) {
		x, y := by[a], by[b]
		if !x.ok() || !y.ok() || x.Reads == 0 || y.Reads == 0 {
			return
		}
		out = append(out, fmt.Sprintf("%s: p50 %s vs %s ms, p99 %s vs %s ms, %.0f vs %.0f KiB served per read",
			what, ms(x.P50), ms(y.P50), ms(x.P99), ms(y.P99), x.servedPerRead()/1024, y.servedPerRead()/1024))
	}
	lat("mount-rangefs/cold-random", "mount-rclone/cold-random", "cold random 4 KiB reads, rangefs vs rclone (defaults)")
	lat("mount-rangefs/cold-random", "mount-rclone-tuned/cold-random", "cold random 4 KiB reads, rangefs vs rclone (tuned)")
	lat("mount-rangefs/cold-random", "mount-httpdirfs/cold-random", "cold random 4 KiB reads, rangefs vs httpdirfs")
	if f := by["fleet"]; f.ok() {
		out = append(out, fmt.Sprintf("fleet: %s, %.1f MB/s in total: %s", f.Label, f.MBps(), f.Note))
	}
	if g, m := by["get-j8"], by["mount-rangefs/cold-cat"]; g.RSSKiB > 0 || m.RSSKiB > 0 {
		out = append(out, fmt.Sprintf("peak RSS: rangefs get -j8 %s MiB, rangefs mount (cold read) %s MiB", rssCell(g.RSSKiB, g.RSSUpper), rssCell(m.RSSKiB, m.RSSUpper)))
	}
	return out
}

// toolVersions asks every tool for its version, each bounded to 5 s.
func toolVersions(rangefsBin string) []string {
	cmds := [][]string{
		{"aria2c", "--version"}, {"axel", "--version"}, {"curl", "--version"},
		{"rclone", "version"}, {"httpdirfs", "--version"}, {nginxBinary(), "-v"},
	}
	out := []string{}
	if rangefsBin != "" {
		v := firstLine(rangefsBin, "version")
		if !strings.HasPrefix(v, "rangefs") {
			v = "rangefs " + v
		}
		out = append(out, v)
	} else {
		out = append(out, "rangefs (not built)")
	}
	for _, c := range cmds {
		// Name and version only: curl's first line goes on to list every library it links.
		f := strings.Fields(firstLine(c...))
		out = append(out, strings.Join(f[:min(len(f), 3)], " "))
	}
	return out
}

func firstLine(argv ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = time.Second
	b, err := cmd.CombinedOutput()
	line := strings.TrimSpace(strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)[0])
	if line == "" && err != nil {
		return filepath.Base(argv[0]) + " (" + err.Error() + ")"
	}
	return line
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
