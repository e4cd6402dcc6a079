package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The client rows run real programs — ffprobe, ffmpeg, unzip, python3's zipfile, sqlite3,
// head — on files served by the same capped nginx as every other row, through rangefs and
// through rclone mount tuned, and count what each mount fetched for them. Such programs
// read a little of a big file (an index at the end, one member, a few B-tree pages), so
// these rows measure how much a mount fetches beyond what the program asked for.
//
// Each row: for each mount, clientRuns times: a fresh cache, mount, run the commands one
// after another (timed from the first exec to the last exit), unmount; bytes served are
// the proxy's count from before the mount to after the unmount. The row reports the
// median of the runs for seconds and, separately, for bytes. Every run's output (stdout,
// hashed) must equal the same commands' output on the local copy of the fixture.

const (
	secClients   = "clients" // real client programs through a mount
	clientRuns   = 3
	clientSubdir = "clients" // served directory of the fixtures, beside the test file
	// clientTimeout bounds one client command.
	clientTimeout = 2 * time.Minute
)

// clientCase is one client row.
type clientCase struct {
	id    string // row id, "client-…"
	label string
	tool  string // the client program (must be installed)
	fx    *fixture
	// cmds are the commands of one run, given the path of the fixture (local or mounted).
	cmds func(path string) [][]string
}

// clientSuite holds the client rows' shared state: the fixtures, generated on first use
// and served from the nginx root, and each case's expected output.
type clientSuite struct {
	store  *fixtureStore
	served map[*fixture]string // fixture -> its path under the nginx root
}

// Fixture parameters. The video is 80 s of noisy 720p at about 25 Mbit/s (about 250 MB):
// a probe reads its index, a 1 s decode about 3 MB. The zip has 1200 members of about
// 150 KB deflated each (about 180 MB) and a central directory of about 80 KB. The
// database is about 170 MB with an index on k.
var (
	clientVideo  = videoParams{Width: 1280, Height: 720, FPS: 25, Seconds: 80, Noise: 8, Seed: 1, GOP: 50}
	clientZip    = zipParams{Members: 1200, MemberSize: 300_000, Seed: 1}
	clientSQLite = sqliteParams{Rows: 600_000, PayloadLen: 240}
	// clientSeeks are the -ss offsets (seconds) of the seek row: five, spread over the video.
	clientSeeks = []int{8, 24, 40, 56, 72}
	// clientZipPick are the members python reads (unzip reads the first).
	clientZipPick = []int{421, 17, 1003}
	// clientSQLiteID is the row the lookup asks for, by its indexed key.
	clientSQLiteID = 123_457
)

// zipfileScript reads the members whose indices follow the archive's path and prints
// each one's name and sha256.
const zipfileScript = `import hashlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = z.namelist()
    for i in sys.argv[2:]:
        n = names[int(i)]
        print(n, hashlib.sha256(z.read(n)).hexdigest())
`

// sqliteURI opens path read-only and immutable, so SQLite takes no locks and reads only
// the pages the query needs.
func sqliteURI(path string) string {
	return (&url.URL{Scheme: "file", Path: path}).String() + "?mode=ro&immutable=1"
}

// clientCases lists the client rows in run order.
func clientCases() []clientCase {
	mp4 := mp4Fixture(clientVideo)
	mkv := mkvFixture(mp4)
	zf := zipFixture(clientZip)
	db := sqliteFixture(clientSQLite)
	probe := func(p string) [][]string {
		// No file name in the output: it differs between the local and the mounted path.
		return [][]string{{"ffprobe", "-v", "error", "-show_entries",
			"format=duration,size,bit_rate,nb_streams:stream=index,codec_name,width,height,sample_rate",
			"-of", "compact", p}}
	}
	picks := make([]string, len(clientZipPick))
	for i, n := range clientZipPick {
		picks[i] = strconv.Itoa(n)
	}
	return []clientCase{
		{id: "client-ffprobe-mp4", label: "ffprobe, mp4 (moov at the end)", tool: "ffprobe", fx: mp4, cmds: probe},
		{id: "client-ffprobe-mkv", label: "ffprobe, mkv", tool: "ffprobe", fx: mkv, cmds: probe},
		{id: "client-ffmpeg-seek", label: fmt.Sprintf("ffmpeg -ss T -t 1, %d seeks, mp4", len(clientSeeks)), tool: "ffmpeg", fx: mp4,
			cmds: func(p string) [][]string {
				var c [][]string
				for _, t := range clientSeeks {
					// -f md5 instead of -f null: the same decode, and its one-line hash of
					// the decoded frames checks the bytes the mount gave.
					c = append(c, []string{"ffmpeg", "-nostdin", "-v", "error", "-ss", strconv.Itoa(t), "-i", p,
						"-t", "1", "-f", "md5", "-"})
				}
				return c
			}},
		{id: "client-unzip", label: "unzip -p, one member", tool: "unzip", fx: zf,
			cmds: func(p string) [][]string {
				return [][]string{{"unzip", "-p", p, zipMemberName(clientZipPick[0])}}
			}},
		{id: "client-zipfile", label: fmt.Sprintf("python3 zipfile, %d members", len(clientZipPick)), tool: "python3", fx: zf,
			cmds: func(p string) [][]string {
				return [][]string{append([]string{"python3", "-c", zipfileScript, p}, picks...)}
			}},
		{id: "client-sqlite", label: "sqlite3 indexed point lookup", tool: "sqlite3", fx: db,
			cmds: func(p string) [][]string {
				return [][]string{{"sqlite3", "-readonly", sqliteURI(p),
					fmt.Sprintf("SELECT id, payload FROM t WHERE k = '%s';", sqliteKey(clientSQLite, clientSQLiteID))}}
			}},
		{id: "client-head", label: "head -c 1, mp4", tool: "head", fx: mp4,
			cmds: func(p string) [][]string { return [][]string{{"head", "-c", "1", p}} }},
	}
}

// clientRows are the client rows for buildRows; they share one suite so each fixture is
// made (or found) once per run.
func clientRows(cfg config) []row {
	s := &clientSuite{store: newFixtureStore(filepath.Join(cfg.outDir, "fixtures"), io.Discard), served: map[*fixture]string{}}
	var rows []row
	for _, c := range clientCases() {
		// Estimate: per mount and run, a mount and unmount of about 2 s plus the reads;
		// the first row also generates the video (about a minute) when it is not cached.
		est := 2 * clientRuns * 3 * time.Second
		// tools names only the client program: --only rclone keeps meaning the rclone rows.
		rows = append(rows, row{id: c.id, tools: []string{c.tool}, est: est,
			run: func(ctx context.Context, b *bench) []result { return s.run(ctx, b, c) }})
	}
	return rows
}

// clientMount is one mount the client rows compare.
type clientMount struct {
	suffix string // row id suffix
	mt     mountTool
	label  string
	// noPrefetch: rangefs runs without its background fill, which would otherwise fetch
	// the whole file while the client runs; rclone tuned has none.
	noPrefetch bool
}

func clientMounts(cfg config) []clientMount {
	return []clientMount{
		{suffix: "rangefs", mt: rangefsMount(), label: "rangefs mount -j8 --no-prefetch", noPrefetch: true},
		{suffix: "rclone-tuned", mt: rcloneMount("mount-rclone-tuned", "rclone mount full, tuned", cfg.rcloneTuned), label: "rclone mount full, tuned"},
	}
}

// run runs one case on every mount.
func (s *clientSuite) run(ctx context.Context, b *bench, c clientCase) []result {
	s.store.log = b.log
	mounts := clientMounts(b.cfg)
	out := make([]result, len(mounts))
	for i, m := range mounts {
		out[i] = result{ID: c.id + "/" + m.suffix, Section: secClients, Tool: m.mt.tool, Label: c.label + "; " + m.label}
	}
	fail := func(err error) []result {
		for i := range out {
			if out[i].Err == "" {
				out[i].Err = err.Error()
			}
		}
		return out
	}
	if _, err := exec.LookPath(c.tool); err != nil {
		return fail(fmt.Errorf("%s not installed (make bench-deps)", c.tool))
	}
	local, err := s.store.ensure(ctx, c.fx)
	if err != nil {
		return fail(err)
	}
	served, err := s.serve(b, c.fx, local)
	if err != nil {
		return fail(err)
	}
	fi, err := os.Stat(served)
	if err != nil {
		return fail(err)
	}
	want, _, err := runClientCmds(ctx, c.cmds(local), b.work)
	if err != nil {
		return fail(fmt.Errorf("on the local file: %w", err))
	}
	reads, err := s.programReads(ctx, b, c, local, want)
	for i := range out {
		if err != nil {
			out[i].Note = "program's own reads not measured: " + err.Error()
		}
		out[i].Bytes = reads
	}
	for i, m := range mounts {
		if err := b.toolErr(m.mt.tool); err != nil {
			out[i].Err = err.Error()
			continue
		}
		s.measure(ctx, b, c, m, fi.Size(), want, &out[i])
		if ctx.Err() != nil {
			break
		}
	}
	return out
}

// programReads runs c's commands once on the fixture shown through a countFS and returns
// the bytes they read from it: what the program itself asks for, with no read-ahead.
func (s *clientSuite) programReads(ctx context.Context, b *bench, c clientCase, local, want string) (int64, error) {
	dir, err := b.freshDir("mnt", c.id+"-count")
	if err != nil {
		return 0, err
	}
	b.sup.addMount(dir)
	cfs, err := mountCountFS(dir, map[string]string{c.fx.name: local})
	if err != nil {
		return 0, err
	}
	defer func() {
		cfs.close()
		if !isMounted(dir) {
			os.Remove(dir)
		}
	}()
	p := cfs.path(c.fx.name)
	sum, _, err := runClientCmds(ctx, c.cmds(p), b.work)
	if err != nil {
		return 0, err
	}
	if sum != want {
		return 0, errors.New("the output through the counting mount differs from the local file's")
	}
	return cfs.readBytes(c.fx.name), nil
}

// clientRun is one run's measurement.
type clientRun struct {
	wall     time.Duration
	served   int64
	requests int64
	conns    int64
}

// measure runs c through mount m clientRuns times and fills r with the medians.
func (s *clientSuite) measure(ctx context.Context, b *bench, c clientCase, m clientMount, size int64, want string, r *result) {
	var runs []clientRun
	r.Verified = true
	for i := 0; i < clientRuns && ctx.Err() == nil; i++ {
		run, sum, err := s.once(ctx, b, c, m, size, i)
		if err != nil {
			r.Err = fmt.Sprintf("run %d: %v", i+1, err)
			r.Verified = false
			break
		}
		if sum != want {
			r.Verified = false
		}
		runs = append(runs, run)
	}
	if len(runs) == 0 {
		if r.Err == "" {
			r.Err = "interrupted"
		}
		return
	}
	fillClientResult(r, runs)
}

// fillClientResult puts the runs' medians into r and every run's figures into its note.
func fillClientResult(r *result, runs []clientRun) {
	walls := make([]time.Duration, len(runs))
	served, reqs, conns := make([]int64, len(runs)), make([]int64, len(runs)), make([]int64, len(runs))
	var ws, ss []string
	for i, x := range runs {
		walls[i], served[i], reqs[i], conns[i] = x.wall, x.served, x.requests, x.conns
		ws = append(ws, secs(x.wall))
		ss = append(ss, strconv.FormatFloat(float64(x.served)/1024, 'f', 0, 64))
	}
	r.Wall = median(walls)
	r.Served, r.Requests, r.Conns = median(served), median(reqs), median(conns)
	r.Note = joinNote(r.Note, fmt.Sprintf("median of %d runs; served KiB %s; s %s",
		len(runs), strings.Join(ss, "/"), strings.Join(ws, "/")))
}

// median is the middle value (the lower middle for an even count); zero for none.
func median[T int64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// once is one run: fresh cache, mount, the commands, unmount.
func (s *clientSuite) once(ctx context.Context, b *bench, c clientCase, m clientMount, size int64, i int) (clientRun, string, error) {
	var run clientRun
	name := fmt.Sprintf("%s-%s-%d", c.id, m.suffix, i+1)
	cache, err := b.freshDir("cache", name)
	if err != nil {
		return run, "", err
	}
	defer os.RemoveAll(cache)
	u := b.dirURL(false) + clientSubdir + "/"
	if !m.mt.dirURL {
		u += c.fx.name
	}
	s.prewarm()
	snap := b.snapshot()
	mnt, err := b.mountClientFile(m.mt, name, cache, u, c.fx.name, size, m.noPrefetch)
	if err != nil {
		return run, "", fmt.Errorf("mount: %w", err)
	}
	type outcome struct{ sum string }
	t0 := time.Now()
	o, err := bounded(ctx, clientTimeout*time.Duration(len(c.cmds(mnt.file)))+30*time.Second,
		func() { b.sup.stop(mnt.d, 3*time.Second) },
		func(ctx context.Context) (outcome, error) {
			sum, _, err := runClientCmds(ctx, c.cmds(mnt.file), b.work)
			return outcome{sum}, err
		})
	run.wall = time.Since(t0)
	b.unmount(mnt)
	var tr result
	b.traffic(&tr, snap, false)
	run.served, run.requests, run.conns = tr.Served, tr.Requests, tr.Conns
	return run, o.sum, err
}

// serve makes the fixture at local visible under the nginx root as clients/<name>: a
// hard link when the work dir is on the same file system, a copy otherwise.
func (s *clientSuite) serve(b *bench, f *fixture, local string) (string, error) {
	if p, ok := s.served[f]; ok {
		return p, nil
	}
	dir := filepath.Join(b.work, "www", clientSubdir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, f.name)
	os.Remove(p)
	if err := os.Link(local, p); err != nil {
		if err := copyFile(local, p); err != nil {
			return "", err
		}
	}
	s.served[f] = p
	return p, nil
}

// prewarm reads the served fixtures into the page cache, so a row measures the mount,
// never nginx reading from disk after a cache drop.
func (s *clientSuite) prewarm() {
	for _, p := range s.served {
		if f, err := os.Open(p); err == nil {
			io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
			f.Close()
		}
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// mountClientFile starts mt on a fresh mountpoint for URL u and waits, bounded by
// --mount-timeout, until name shows size bytes (bench.mountURL uses it for the test
// file). The mountpoint is registered with the supervisor before the daemon starts, so
// cleanup covers a mount that half-happened.
func (b *bench) mountClientFile(mt mountTool, id, cache, u, name string, size int64, noPrefetch bool) (*mounted, error) {
	mnt, err := b.freshDir("mnt", id)
	if err != nil {
		return nil, err
	}
	argv := b.fixArgv(mt.argv(u, mnt, cache, noPrefetch))
	b.sup.addMount(mnt)
	c, err := b.sup.start(id, argv, b.work, b.logPath(id))
	if err != nil {
		b.sup.unmount(mnt, nil)
		return nil, err
	}
	m := &mounted{dir: mnt, file: filepath.Join(mnt, name), d: c}
	deadline := time.Now().Add(b.cfg.mountTimeout)
	last := "no stat yet"
	for {
		if c.exited() {
			b.unmount(m)
			return nil, fmt.Errorf("exited before its file appeared: %s", c.failure())
		}
		fi, err := statWithin(m.file, time.Until(deadline))
		switch {
		case err != nil:
			last = err.Error()
		case fi.Size() != size:
			last = fmt.Sprintf("file shows size %d, want %d", fi.Size(), size)
		default:
			m.ready = time.Since(c.started)
			return m, nil
		}
		if time.Now().After(deadline) {
			b.unmount(m)
			return nil, fmt.Errorf("%s did not appear within %v (%s)", name, b.cfg.mountTimeout, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// runClientCmds runs the commands one after another in dir and returns the sha256 of
// their stdout, all of it in order, and its length. A command that fails, or runs past
// clientTimeout, ends the run with an error that quotes its stderr.
func runClientCmds(ctx context.Context, cmds [][]string, dir string) (string, int64, error) {
	h := sha256.New()
	cw := &countWriter{w: h}
	for _, argv := range cmds {
		if err := runClientCmd(ctx, argv, dir, cw); err != nil {
			return "", cw.n, err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

func runClientCmd(ctx context.Context, argv []string, dir string, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	var stderr, outTail tailBuffer
	cmd.Stdout = io.MultiWriter(stdout, &outTail)
	cmd.Stderr = &stderr
	// Its own process group, killed whole on timeout; SIGTERM should the driver die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		msg := stderr.String()
		if msg == "" { // unzip reports its errors on stdout
			msg = outTail.String()
		}
		return fmt.Errorf("%s: %v: %s", filepath.Base(argv[0]), err, tailLines(msg, 2))
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = slices.Clone(t.b[len(t.b)-4096:])
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(bytes.TrimSpace(t.b)) }

// splitClients separates the client rows, which get a table of their own.
func splitClients(rs []result) (rest, clients []result) {
	for _, r := range rs {
		if r.Section == secClients {
			clients = append(clients, r)
		} else {
			rest = append(rest, r)
		}
	}
	return rest, clients
}

// writeClientTable puts each client row's mounts side by side: median KiB served and
// seconds, and rangefs's bytes as a multiple of rclone tuned's.
func writeClientTable(w io.Writer, rs []result) error {
	if len(rs) == 0 {
		return nil
	}
	type pair struct {
		label        string
		reads        string // what the program read, KiB ("-" when not measured)
		rangefs, rcl *result
	}
	var order []string
	by := map[string]*pair{}
	for i := range rs {
		r := &rs[i]
		id, suffix, _ := strings.Cut(r.ID, "/")
		p := by[id]
		if p == nil {
			p = &pair{label: strings.SplitN(r.Label, "; ", 2)[0], reads: "-"}
			by[id] = p
			order = append(order, id)
		}
		if r.Bytes > 0 {
			p.reads = strconv.FormatFloat(float64(r.Bytes)/1024, 'f', 1, 64)
		}
		switch suffix {
		case "rangefs":
			p.rangefs = r
		case "rclone-tuned":
			p.rcl = r
		}
	}
	cell := func(r *result) (kib, s string) {
		if r == nil || r.Err != "" {
			return "-", "-"
		}
		return strconv.FormatFloat(float64(r.Served)/1024, 'f', 0, 64), strconv.FormatFloat(r.Wall.Seconds(), 'f', 3, 64)
	}
	status := func(r *result) string {
		if r == nil {
			return "not run"
		}
		return r.status()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Client programs through the mount (median of %d runs, fresh cache each; KiB served counted at the proxy; "+
		"rangefs runs with --no-prefetch; program reads: what the commands read from the file, counted through a direct-I/O mount):\n\n", clientRuns)
	b.WriteString("| row | client | program reads KiB | rangefs KiB | rangefs s | rclone tuned KiB | rclone tuned s | KiB ratio | result |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|---|\n")
	for _, id := range order {
		p := by[id]
		rk, rs := cell(p.rangefs)
		ck, cs := cell(p.rcl)
		ratio := "-"
		if p.rangefs != nil && p.rcl != nil && p.rangefs.Err == "" && p.rcl.Err == "" && p.rcl.Served > 0 {
			ratio = strconv.FormatFloat(float64(p.rangefs.Served)/float64(p.rcl.Served), 'f', 1, 64) + "x"
		}
		st := "rangefs " + status(p.rangefs) + ", rclone " + status(p.rcl)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", mdCell(id), mdCell(p.label), p.reads, rk, rs, ck, cs, ratio, mdCell(st))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
