package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"rangefs/cmd/internal/bytesize"
	"rangefs/fetch/fetchtest/content"
	"rangefs/fs"
)

// bench owns one run: the work dir, the generated file, nginx, the proxy and every child.
// Rows run one after another (a row measures one tool alone on the machine); bench is not
// safe for concurrent use.
type bench struct {
	cfg    config
	log    io.Writer
	sup    *supervisor
	work   string // work dir (temp unless --work)
	ownsWk bool   // remove work at close
	logDir string // per-row logs of the tools (inside the out dir, so they outlive the run)

	data  dataFile
	nginx *nginxServer
	proxy *proxy

	rangefsBin string // absolute path, or "" with rangefsErr set
	rangefsErr error
	rcloneConf string // empty private config so rclone touches nothing of the user's

	sourceCold bool // the served file may not be in the page cache (caches were dropped)
	dropErr    error
	seq        int // makes fresh directory names unique
}

// newBench prepares everything except the rows: work dir, test file, nginx and proxy.
// On error, what was started is already stopped.
func newBench(cfg config, log io.Writer) (_ *bench, err error) {
	b := &bench{cfg: cfg, log: log, sup: newSupervisor(log, cfg.verbose)}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if err := os.MkdirAll(cfg.outDir, 0o755); err != nil {
		return nil, err
	}
	b.logDir = filepath.Join(cfg.outDir, "logs")
	os.RemoveAll(b.logDir)
	if err := os.MkdirAll(b.logDir, 0o755); err != nil {
		return nil, err
	}
	if cfg.workDir == "" {
		if b.work, err = os.MkdirTemp("", "rangefs-bench-"); err != nil {
			return nil, err
		}
		b.ownsWk = !cfg.keep
	} else {
		if b.work, err = filepath.Abs(cfg.workDir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(b.work, 0o755); err != nil {
			return nil, err
		}
	}
	// nginx's workers run as an unprivileged user when the driver is root: they must be
	// able to walk into the served directory.
	if err := os.Chmod(b.work, 0o755); err != nil {
		return nil, err
	}
	dataDir := filepath.Join(b.work, "www")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	b.rangefsBin, b.rangefsErr = findRangefs(cfg.rangefs)

	fmt.Fprintf(log, "generating %s test file in %s\n", bytesize.Format(cfg.size), dataDir)
	if b.data, err = ensureDataFile(dataDir, cfg.size, cfg.seed); err != nil {
		return nil, fmt.Errorf("test file: %w", err)
	}
	fmt.Fprintf(log, "sha256 %s\n", b.data.sum)

	if b.nginx, err = startNginx(b.sup, filepath.Join(b.work, "nginx"), dataDir); err != nil {
		return nil, err
	}
	if b.proxy, err = newProxy("127.0.0.1:0", b.nginx.addr(), cfg.capRate, cfg.rtt); err != nil {
		return nil, err
	}
	b.rcloneConf = filepath.Join(b.work, "rclone.conf")
	if err := os.WriteFile(b.rcloneConf, nil, 0o600); err != nil {
		return nil, err
	}
	if err := b.selfCheck(); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "nginx on %s, pacing proxy on %s (%s per connection, rtt %v)\n",
		b.nginx.addr(), b.proxy.Addr(), formatRate(cfg.capRate), cfg.rtt)
	return b, nil
}

// findRangefs resolves the binary under test; a missing one fails only the rangefs rows.
func findRangefs(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("rangefs binary %s not found (build it: go build -o bin/rangefs ./cmd/rangefs)", p)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("rangefs binary %s is not an executable file", p)
	}
	return abs, nil
}

// selfCheck asks nginx, through the proxy, for the first bytes of the file, so a server
// that cannot read the file (permissions) fails the run at once instead of every row.
func (b *bench) selfCheck() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fail := func(err error) error {
		return fmt.Errorf("nginx self-check (GET %s through the proxy): %v (%s; nginx workers run unprivileged "+
			"when the driver is root, so every directory above the work dir must be world-searchable)",
			b.url(false), err, tailFile(filepath.Join(b.work, "nginx", "error.log")))
	}
	req, err := http.NewRequestWithContext(ctx, "GET", b.url(false), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Range", "bytes=0-15")
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusPartialContent {
		return fail(errors.New(resp.Status))
	}
	want := make([]byte, 16)
	content.Fill(want, 0, b.cfg.seed)
	if !bytes.Equal(got, want) {
		return errors.New("nginx self-check: first 16 bytes differ from the generated file")
	}
	return nil
}

// close stops every child, unmounts everything, closes the proxy and removes the work dir
// unless it is kept. Bounded; idempotent enough to call after a partial newBench.
func (b *bench) close() {
	b.sup.cleanup()
	if b.proxy != nil {
		b.proxy.Close()
	}
	if b.ownsWk && b.work != "" {
		// Never remove a tree that still holds a mount: that would walk into it.
		if err := noMountsUnder(b.work); err != nil {
			fmt.Fprintf(b.log, "keeping %s: %v\n", b.work, err)
			return
		}
		os.RemoveAll(b.work)
	} else if b.work != "" {
		fmt.Fprintf(b.log, "work dir kept: %s\n", b.work)
	}
}

func noMountsUnder(dir string) error {
	ms, err := fs.Mounts()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			return fmt.Errorf("%s is still mounted", m.Point)
		}
	}
	return nil
}

// url is the test file's URL: through the capped proxy, or straight to nginx (direct).
func (b *bench) url(direct bool) string { return b.dirURL(direct) + b.data.name }

// dirURL is the served directory (what rclone and httpdirfs mount).
func (b *bench) dirURL(direct bool) string {
	if direct {
		return "http://" + b.nginx.addr() + "/"
	}
	return "http://" + b.proxy.Addr() + "/"
}

// freshDir returns a new empty directory under the work dir.
func (b *bench) freshDir(kind, id string) (string, error) {
	b.seq++
	d := filepath.Join(b.work, kind, fmt.Sprintf("%s-%d", strings.ReplaceAll(id, "/", "-"), b.seq))
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	return d, nil
}

// logPath is where a row's tool writes its output.
func (b *bench) logPath(id string) string {
	return filepath.Join(b.logDir, strings.ReplaceAll(id, "/", "-")+".log")
}

// dropCaches writes back dirty pages and empties the page cache, so a "warm" read comes
// from the tool's own disk cache, not from memory. Needs root; without it rows say so.
func (b *bench) dropCaches() error {
	syscall.Sync()
	err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
	if err != nil {
		b.dropErr = err
		return err
	}
	b.sourceCold = true
	return nil
}

// prewarmSource reads the served file into the page cache after caches were dropped, so
// network rows measure the client, never nginx reading from disk.
func (b *bench) prewarmSource() {
	if !b.sourceCold {
		return
	}
	if f, err := os.Open(b.data.path); err == nil {
		io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
		f.Close()
	}
	b.sourceCold = false
}

// snapshot marks the start of a measured window.
type snapshot struct {
	proxy  proxyStats
	logOff int64
}

func (b *bench) snapshot() snapshot {
	return snapshot{proxy: b.proxy.Stats(), logOff: logSize(b.nginx.logPath)}
}

// traffic fills r's served bytes, requests and connections for the window since s.
// Through the proxy the proxy's count is used (what actually crossed the capped link); a
// direct row uses nginx's $bytes_sent. It first lets connections of the finished tool
// drain, bounded, so late log lines are not lost.
func (b *bench) traffic(r *result, s snapshot, direct bool) {
	if !direct {
		b.proxy.WaitIdle(3 * time.Second)
	}
	var st logStats
	for i := 0; i < 10; i++ {
		cur, _, err := readLogFrom(b.nginx.logPath, s.logOff)
		if err != nil {
			r.Note = joinNote(r.Note, "access log: "+err.Error())
			break
		}
		if i > 0 && cur == st {
			break
		}
		st = cur
		time.Sleep(50 * time.Millisecond)
	}
	r.Requests = st.Requests
	b.servedSince(r, s, st, direct)
}

// servedSince fills r's served bytes and connections for the window since s:
// nginx's counts st for a direct row, the proxy's otherwise.
func (b *bench) servedSince(r *result, s snapshot, st logStats, direct bool) {
	if direct {
		r.Served, r.Conns = st.BytesSent, st.Conns
		return
	}
	now := b.proxy.Stats()
	r.Served = now.Served - s.proxy.Served
	r.Conns = now.Conns - s.proxy.Conns
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	return a + "; " + b
}

// seqTimeout bounds one sequential transfer of the whole file: three times what one capped
// connection needs, plus a minute.
func (b *bench) seqTimeout() time.Duration {
	rate := float64(b.cfg.capRate)
	if rate <= 0 {
		rate = 20e6
	}
	return time.Minute + time.Duration(3*float64(b.cfg.size)/rate*float64(time.Second))
}

// randomTimeout bounds one random-read phase: a minute plus 16 MiB per read at the cap
// (httpdirfs fetches 8 MiB segments per miss).
func (b *bench) randomTimeout() time.Duration {
	rate := float64(b.cfg.capRate)
	if rate <= 0 {
		rate = 20e6
	}
	d := time.Minute + time.Duration(float64(b.cfg.randomReads)*16*(1<<20)/rate*float64(time.Second))
	return min(d, 10*time.Minute)
}

// toolErr says why a row's tool cannot run at all, or nil.
func (b *bench) toolErr(bin string) error {
	if bin == "rangefs" {
		return b.rangefsErr
	}
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Errorf("%s not installed (make bench-deps)", bin)
	}
	return nil
}

// download runs one downloader writing out.bin in a fresh directory, then checks the file.
func (b *bench) download(ctx context.Context, sec, id, tool, label string, argv func(url, out string) []string, direct bool) result {
	r := result{ID: id, Section: sec, Tool: tool, Label: label}
	if err := b.toolErr(tool); err != nil {
		r.Err = err.Error()
		return r
	}
	dir, err := b.freshDir("out", id)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer func() {
		os.RemoveAll(dir)
		syscall.Sync() // so write-back of this row's file does not slow the next row
	}()
	b.prewarmSource()
	a := argv(b.url(direct), "out.bin")
	a = b.fixArgv(a)
	s := b.snapshot()
	c, err := b.sup.runTool(ctx, id, a, dir, b.logPath(id), b.seqTimeout())
	b.traffic(&r, s, direct)
	if c != nil && c.exited() {
		r.Wall = c.wall()
		r.setUsage(c)
	}
	if err != nil {
		r.Err = err.Error()
		return r
	}
	n, sum, err := hashFile(filepath.Join(dir, "out.bin"))
	r.Bytes = n
	if err != nil {
		r.Err = "reading output: " + err.Error()
		return r
	}
	r.Verified = n == b.data.size && sum == b.data.check
	return r
}

// fixArgv points "rangefs" at the binary under test and gives rclone its private, empty
// config file so it reads nothing of the user's.
func (b *bench) fixArgv(a []string) []string {
	switch a[0] {
	case "rangefs":
		a[0] = b.rangefsBin
	case "rclone":
		a = append(a, "--config", b.rcloneConf)
	}
	return a
}

// localDisk is the reference: the generated file read from local disk with the page cache
// dropped, sequentially and at the random offsets.
func (b *bench) localDisk(ctx context.Context) []result {
	seqR := result{ID: "local-disk", Section: secLocal, Tool: "local", Label: "local disk, cat (cache dropped)"}
	out := []result{}
	if err := b.dropCaches(); err != nil {
		seqR.Note = "page cache not dropped: " + err.Error()
	}
	t0 := time.Now()
	n, sum, err := readAndHash(ctx, b.data.path)
	seqR.Wall, seqR.Bytes = time.Since(t0), n
	if err != nil {
		seqR.Err = err.Error()
	}
	seqR.Verified = sum == b.data.check && n == b.data.size
	out = append(out, seqR)
	if b.cfg.randomReads > 0 {
		rr := result{ID: "local-disk/random", Section: secRandom, Tool: "local", Label: "local disk (cache dropped)"}
		if err := b.dropCaches(); err != nil {
			rr.Note = "page cache not dropped: " + err.Error()
		}
		lat, ok, err := randomReads(ctx, b.data.path, randomOffsets(b.cfg.randomReads, b.data.size, b.cfg.seed), b.cfg.seed)
		fillRandom(&rr, lat, ok, err)
		out = append(out, rr)
	}
	b.prewarmSource()
	return out
}

// randomReads opens path once and does one 4 KiB pread at each offset, timing each and
// checking its bytes against the pattern. It stops at the first error or when ctx ends.
func randomReads(ctx context.Context, path string, offs []int64, seed uint64) ([]time.Duration, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	want := make([]byte, 4096)
	lat := make([]time.Duration, 0, len(offs))
	ok := true
	for _, off := range offs {
		if err := ctx.Err(); err != nil {
			return lat, false, err
		}
		t0 := time.Now()
		n, err := f.ReadAt(buf, off)
		lat = append(lat, time.Since(t0))
		if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
			return lat, false, fmt.Errorf("pread at %d: %w", off, err)
		}
		content.Fill(want, off, seed)
		if !bytes.Equal(buf, want) {
			ok = false
		}
	}
	return lat, ok, nil
}

// fillRandom records a random phase's outcome in r.
func fillRandom(r *result, lat []time.Duration, ok bool, err error) {
	r.Reads = len(lat)
	r.P50, r.P99 = percentile(lat, 50), percentile(lat, 99)
	r.Verified = ok && err == nil
	if err != nil {
		r.Err = err.Error()
	}
}

// bounded runs f in a goroutine and waits for it at most d (or until ctx ends). On
// timeout it calls kill, which must make f return (killing the mount daemon ends a read
// stuck in FUSE), and waits up to 15 s more; if f is still stuck, its result is dropped.
func bounded[T any](ctx context.Context, d time.Duration, kill func(), f func(ctx context.Context) (T, error)) (T, error) {
	type res struct {
		v   T
		err error
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan res, 1)
	go func() {
		v, err := f(fctx)
		done <- res{v, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	var why error
	select {
	case r := <-done:
		return r.v, r.err
	case <-t.C:
		why = fmt.Errorf("timed out after %v", d)
	case <-ctx.Done():
		why = ctx.Err()
	}
	cancel()
	kill()
	select {
	case r := <-done:
		return r.v, why
	case <-time.After(15 * time.Second):
		var zero T
		return zero, fmt.Errorf("%w; the reader is still stuck in the kernel", why)
	}
}

// estimate is a rough duration for --list and the start banner.
func (b *bench) estimate(rows []row) time.Duration {
	var t time.Duration
	for _, r := range rows {
		t += r.est
	}
	return t
}

// secondsAt is the time to move n bytes at rate bytes/s (rate 0: assume 400 MB/s).
func secondsAt(n int64, rate float64) time.Duration {
	if rate <= 0 {
		rate = 400e6
	}
	return time.Duration(float64(n) / rate * float64(time.Second))
}

func itoa(n int) string { return strconv.Itoa(n) }
