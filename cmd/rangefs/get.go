package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"rangefs/cache"
	"rangefs/fetch"
)

var (
	errChecksum = errors.New("checksum mismatch")
	errNoSpace  = errors.New("not enough disk space")
)

// maxRestarts bounds how often a download starts over because the remote
// file changed under it.
const maxRestarts = 3

func runGet(ctx context.Context, c *getConfig, stdout, stderr io.Writer) error {
	// get reports its failures itself, once, as one line that says what
	// to do; the engine's log is for -v only.
	log := newLogger(stderr, &c.commonConfig, slog.LevelError+4)
	load := &poolLoad{}
	client := newClient(&c.commonConfig, log, stderr, load)
	defer client.Close()
	if c.OutputDir != "" {
		if err := os.MkdirAll(c.OutputDir, 0o777); err != nil {
			return fmt.Errorf("--output-dir: %w", err)
		}
	}
	var pool *cache.Pool // one file: sized by its sources (mirrors) in getOne
	if c.InputFile != "" {
		pool = cache.NewPool(c.Connections)
		load.set(pool)
	}
	disp := newDisplay(stderr, c.Quiet, c.InputFile != "")
	defer disp.wait()
	if c.InputFile == "" {
		return getOne(ctx, c, c.Jobs[0], client, load, pool, disp, nil, log, stdout, stderr)
	}
	// -i: up to --parallel files at once, sharing the connection budget.
	// A failed file does not stop the others; each failure is one line.
	errs := make([]error, len(c.Jobs))
	claims := &outputClaims{}
	sem := make(chan struct{}, c.Parallel)
	var wg sync.WaitGroup
	for i, j := range c.Jobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if errs[i] = getOne(ctx, c, j, client, load, pool, disp, claims, log, stdout, stderr); errs[i] != nil {
				disp.println("rangefs: %s: %v", fetch.Redact(j.URL), errs[i])
			}
		})
	}
	wg.Wait()
	failed, first := 0, error(nil)
	for _, err := range errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d downloads failed (run the same command again to resume them); the first: %w",
			failed, len(c.Jobs), first)
	}
	return nil
}

// getOne downloads one file.
func getOne(ctx context.Context, c *getConfig, j getJob, client *fetch.Client, load *poolLoad, pool *cache.Pool,
	disp *display, claims *outputClaims, log *slog.Logger, stdout, stderr io.Writer) error {
	obj, err := probeJob(ctx, client, c, &j, stderr)
	if err != nil {
		return err
	}
	if err := checkSize(&c.commonConfig, obj); err != nil {
		return err
	}
	if pool == nil {
		pool = cache.NewPool(poolSize(c.Connections, obj))
		load.set(pool)
	}
	if j.Output == "-" {
		return getToStdout(ctx, c, j, obj, pool, disp, log, stdout)
	}
	out, err := outputPath(j.Output, c.OutputDir, obj.Name)
	if err != nil {
		return err
	}
	if err := claims.claim(out, j.URL); err != nil {
		return err
	}
	if err := checkOutput(out, c.Force); err != nil {
		return err
	}
	state := out + ".rangefs"

	if !obj.Ranges {
		return streamGet(ctx, c, j, obj, out, disp, stderr)
	}

	// The partial download is of one URL, named as a mount's cache directory
	// is: a get of another URL to the same output starts over, whose
	// server's validators may be the same (nginx's ETag is the mtime and the
	// size).
	source := cache.DirName(cacheIdentity(obj, j.URL, c.VolatileQuery))
	for restart := 0; ; restart++ {
		err = fillOnce(ctx, c, obj, source, state, pool, disp, out, log)
		if errors.Is(err, fetch.ErrRangeIgnored) {
			// The server advertised ranges but answered with whole bodies.
			os.RemoveAll(state)
			return streamGet(ctx, c, j, obj, out, disp, stderr)
		}
		if !errors.Is(err, cache.ErrStale) || restart == maxRestarts {
			break
		}
		disp.println("rangefs: the remote file changed during the download; starting over with the new version")
		if obj, err = probeJob(ctx, client, c, &j, stderr); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	data := filepath.Join(state, "data")
	if j.SHA256 != "" {
		if err := checkSHA256(ctx, data, j.SHA256); err != nil {
			// The bytes are what the server serves: keeping them would only
			// make the next run fail the same way.
			os.RemoveAll(state)
			return err
		}
	}
	if err := publish(data, out, c.Force); err != nil {
		return err
	}
	os.RemoveAll(state)
	return nil
}

// probeJob probes one download's sources (its URL, --mirror, a Metalink); a
// Metalink's whole-file hash becomes the job's checksum.
func probeJob(ctx context.Context, client *fetch.Client, c *getConfig, j *getJob, stderr io.Writer) (*fetch.Object, error) {
	s, err := probeSources(ctx, client, &c.commonConfig, withNetrc(j.URL, c.netrc), stderr)
	if err != nil {
		return nil, err
	}
	if s.sha256 != "" {
		if j.SHA256 != "" && j.SHA256 != s.sha256 {
			return nil, usagef("--sha256 %s differs from the Metalink's sha-256 %s", j.SHA256, s.sha256)
		}
		j.SHA256 = s.sha256
	}
	return s.obj, nil
}

// getToStdout writes the file to stdout in order. With ranges, it goes
// through a temporary cache (in $TMPDIR, removed at the end) read
// sequentially, so read-ahead fetches ahead in parallel; without, one stream.
// A --sha256 mismatch is reported (exit 5) after the bytes have gone out:
// stdout cannot be taken back.
func getToStdout(ctx context.Context, c *getConfig, j getJob, obj *fetch.Object, pool *cache.Pool,
	disp *display, log *slog.Logger, stdout io.Writer) error {
	// A reader that went away (| head) is an ordinary end, not a signal
	// that leaves the temporary cache behind.
	signal.Ignore(syscall.SIGPIPE)
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(stdout, h)}
	check := func() error {
		if j.SHA256 != "" && hex.EncodeToString(h.Sum(nil)) != j.SHA256 {
			return fmt.Errorf("%w: got sha256 %x, want %s; the bytes already written to stdout are not the expected file",
				errChecksum, h.Sum(nil), j.SHA256)
		}
		return nil
	}
	stream := func(skip int64) error {
		t := disp.track(obj.Name, func() cache.Stats {
			return cache.Stats{Size: obj.Size, BytesPresent: cw.n.Load(), BytesFetched: cw.n.Load(), Active: 1}
		})
		defer t.stop()
		if err := obj.Stream(ctx, &skipWriter{w: cw, skip: skip}); err != nil {
			return err
		}
		return check()
	}
	if !obj.Ranges {
		return stream(0)
	}
	dir, err := os.MkdirTemp("", "rangefs-get-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := checkSpace(dir, obj.Size); err != nil {
		return fmt.Errorf("%w (-o - keeps the file in $TMPDIR while it streams; point TMPDIR elsewhere)", err)
	}
	f, err := cache.Open(dir, cache.Meta{Size: obj.Size, ChunkSize: c.ChunkSize, ETag: obj.ETag, WeakETag: obj.WeakETag,
		LastModified: obj.LastModified, Date: obj.Date, URL: obj.URL()}, obj, cache.Options{Pool: pool, Logger: log})
	if err != nil {
		return err
	}
	defer f.Close()
	t := disp.track(obj.Name, f.Stats)
	defer t.stop()
	r := f.NewReader()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < obj.Size; {
		n, err := r.ReadAt(ctx, buf[:min(int64(len(buf)), obj.Size-off)], off)
		if n > 0 {
			if _, werr := cw.Write(buf[:n]); werr != nil {
				return &fetch.WriteError{Err: fmt.Errorf("writing to stdout: %w", werr)}
			}
			off += int64(n)
		}
		if errors.Is(err, fetch.ErrRangeIgnored) {
			// Ranges advertised but not served: one stream, from where
			// stdout is (what came before is skipped, not written twice).
			t.stop()
			f.Close()
			return stream(off)
		}
		if err != nil && !(errors.Is(err, io.EOF) && off == obj.Size) {
			return err
		}
	}
	t.stop()
	return check()
}

// skipWriter drops the first skip bytes written to it.
type skipWriter struct {
	w    io.Writer
	skip int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	n := len(p)
	if s.skip >= int64(n) {
		s.skip -= int64(n)
		return n, nil
	}
	p = p[s.skip:]
	s.skip = 0
	if _, err := s.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

// publish gives the finished file at path the usual permissions and renames
// it to out, so out only ever holds a complete file, and makes the rename
// durable. The output is checked again first: what is there may have
// changed during the download.
func publish(path, out string, force bool) error {
	if err := checkOutput(out, force); err != nil {
		return err
	}
	if err := os.Chmod(path, 0o666&^umask()); err != nil {
		return err
	}
	if err := os.Rename(path, out); err != nil {
		return fmt.Errorf("move the finished file into place: %w", err)
	}
	syncDir(filepath.Dir(out))
	return nil
}

// fillOnce opens (or resumes) the download state in dir and fetches what is
// missing. On return the index is flushed and closed.
func fillOnce(ctx context.Context, c *getConfig, obj *fetch.Object, source, dir string, pool *cache.Pool,
	disp *display, out string, log *slog.Logger) error {
	// Fail before creating anything when the file cannot fit; what an
	// earlier run already stored counts as space found.
	var already int64
	var st0 syscall.Stat_t
	if syscall.Stat(filepath.Join(dir, "data"), &st0) == nil {
		already = st0.Blocks * 512
	}
	if err := checkSpace(filepath.Dir(dir), obj.Size-already); err != nil {
		return err
	}
	f, err := cache.Open(dir, cache.Meta{
		Size:         obj.Size,
		ChunkSize:    c.ChunkSize,
		ETag:         obj.ETag,
		WeakETag:     obj.WeakETag,
		LastModified: obj.LastModified,
		Date:         obj.Date,
		URL:          obj.URL(),
		Source:       source,
	}, obj, cache.Options{Pool: pool, Logger: log})
	if err != nil {
		return err
	}
	defer f.Close()
	if why := f.Discarded(); why != "" {
		hint := ""
		if strings.Contains(why, "its query differs") {
			hint = " (--volatile-query resumes it whatever the query)"
		}
		disp.println("rangefs: discarded the partial download (%s); starting from scratch%s", why, hint)
	}
	st := f.Stats()
	if st.Present > 0 && !c.Quiet {
		disp.println("rangefs: resuming %s: %s of %s already here", out, humanBytes(st.BytesPresent), humanBytes(st.Size))
	}
	prog := disp.track(filepath.Base(out), f.Stats)
	defer prog.stop()
	// A resumed download re-checks the chunks of earlier runs before they
	// become part of the file; bad ones are fetched again.
	for range 3 {
		if err := f.Fill(ctx); err != nil {
			prog.stop()
			if ctx.Err() != nil {
				st := f.Stats()
				return fmt.Errorf("interrupted with %s of %s downloaded; run the same command again to resume: %w",
					humanBytes(st.BytesPresent), humanBytes(st.Size), ctx.Err())
			}
			return diskFull(err, filepath.Dir(dir), f.Stats())
		}
		err := f.Verify(ctx)
		if err == nil {
			if err := f.Close(); err != nil {
				return diskFull(err, filepath.Dir(dir), f.Stats())
			}
			prog.finish(out)
			return nil
		}
		if !errors.Is(err, cache.ErrCorrupt) {
			return err
		}
		disp.println("rangefs: chunks from an earlier run failed their checksum (%v); fetching them again", err)
	}
	return errors.New("chunks keep failing their checksum; the disk may be faulty")
}

// streamGet is the fallback for a server that ignores Range: one GET into a
// temporary file beside the output, renamed into place when complete.
func streamGet(ctx context.Context, c *getConfig, j getJob, obj *fetch.Object, out string, disp *display, stderr io.Writer) error {
	disp.println("rangefs: warning: %s ignores Range requests; downloading in one stream (no parallelism, no resume)", obj.URL())
	if err := checkSpace(filepath.Dir(out), obj.Size); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".partial-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(tmp, h)}
	prog := disp.track(filepath.Base(out), func() cache.Stats {
		return cache.Stats{Size: obj.Size, BytesPresent: cw.n.Load(), BytesFetched: cw.n.Load(), Active: 1}
	})
	defer prog.stop()
	err = obj.Stream(ctx, cw)
	if err != nil {
		return diskFull(err, filepath.Dir(out), cache.Stats{Size: obj.Size})
	}
	if cw.n.Load() != obj.Size {
		return fmt.Errorf("the server sent %d bytes, not the %d it announced", cw.n.Load(), obj.Size)
	}
	if j.SHA256 != "" && hex.EncodeToString(h.Sum(nil)) != j.SHA256 {
		return fmt.Errorf("%w: got sha256 %x, want %s; nothing was saved", errChecksum, h.Sum(nil), j.SHA256)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := publish(tmp.Name(), out, c.Force); err != nil {
		return err
	}
	prog.finish(out)
	return nil
}

// outputPath decides where the file goes: -o as given (a directory means
// "inside it"), else the server's suggested name in the current directory.
// The suggested name comes from the network, so it is checked to be a plain
// name that stays in the directory.
func outputPath(flag, dir, suggested string) (string, error) {
	if dir != "" {
		if flag != "" { // an out= line of an -i list
			return filepath.Join(dir, flag), nil
		}
		return filepath.Join(dir, safeName(suggested)), nil
	}
	if flag != "" {
		if fi, err := os.Stat(flag); err == nil && fi.IsDir() {
			return filepath.Join(flag, safeName(suggested)), nil
		}
		if strings.HasSuffix(flag, string(filepath.Separator)) {
			return "", usagef("-o %s: %s is not a directory (an -o that ends in %c names one; create it first)",
				flag, filepath.Clean(flag), filepath.Separator)
		}
		return flag, nil
	}
	return safeName(suggested), nil
}

// checkOutput makes sure the finished file can be put at out, before any
// byte is fetched: its directory exists, and nothing is at out but, with
// --force, a regular file, which the final rename replaces. Anything else (a
// directory, a symbolic link, a FIFO, a device, a socket) is never replaced:
// --force -o /dev/null must not turn the system's /dev/null into a file.
func checkOutput(out string, force bool) error {
	parent := filepath.Dir(out)
	if fi, err := os.Stat(parent); errors.Is(err, os.ErrNotExist) {
		return usagef("cannot save %s: the directory %s does not exist; create it first", out, parent)
	} else if err != nil {
		return err
	} else if !fi.IsDir() {
		return usagef("cannot save %s: %s is not a directory", out, parent)
	}
	fi, err := os.Lstat(out)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return usagef("%s is %s; rangefs get replaces only regular files (with --force): choose another -o",
			out, fileKind(fi.Mode()))
	case !force:
		return usagef("%s already exists; remove it, choose another -o, or pass --force", out)
	}
	return nil
}

// fileKind names the type of a file that is not a regular one.
func fileKind(m os.FileMode) string {
	switch t := m.Type(); {
	case t&os.ModeDir != 0:
		return "a directory"
	case t&os.ModeSymlink != 0:
		return "a symbolic link"
	case t&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case t&os.ModeCharDevice != 0:
		return "a character device"
	case t&os.ModeDevice != 0:
		return "a block device"
	case t&os.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}

// safeName keeps a plain, visible name: no directories, and no leading dots,
// so a server cannot plant a dotfile such as .bashrc in the user's directory.
func safeName(s string) string {
	s = strings.TrimLeft(filepath.Base(filepath.Clean("/"+s)), ".")
	if s == "/" || s == "" {
		return "download"
	}
	return s
}

// checkSHA256 hashes the finished file; Ctrl-C stops it (the download
// stays complete in its state directory, so a rerun only hashes again).
func checkSHA256(ctx context.Context, path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted while checking the sha256; run the same command again: %w", err)
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%w: got sha256 %s, want %s; nothing was saved", errChecksum, got, want)
	}
	return nil
}

// diskFull turns a full disk during the download into what to do: how
// much more space the rest needs, and to run the command again (what is
// downloaded stays and resumes). Other errors pass unchanged.
func diskFull(err error, dir string, st cache.Stats) error {
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return err
	}
	left := st.Size - st.BytesPresent
	var fs syscall.Statfs_t
	free := "unknown"
	if syscall.Statfs(dir, &fs) == nil {
		free = humanBytes(int64(fs.Bavail) * fs.Bsize)
	}
	return fmt.Errorf("%w: the disk holding %s is full with %s of %s downloaded; free at least %s there (%s free now) "+
		"and run the same command again to resume", syscall.ENOSPC, dir, humanBytes(st.BytesPresent), humanBytes(st.Size),
		humanBytes(left), free)
}

// checkSpace fails early, with what to do, when the file cannot fit.
func checkSpace(dir string, need int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return nil // cannot tell; the write errors will
	}
	avail := int64(st.Bavail) * st.Bsize
	if need > avail {
		return fmt.Errorf("%w in %s: need %s more, %s free; free some space or choose another -o",
			errNoSpace, dir, humanBytes(need), humanBytes(avail))
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}
