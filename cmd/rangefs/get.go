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
	"path/filepath"
	"strings"
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

func runGet(ctx context.Context, c *getConfig, stderr io.Writer) error {
	// get reports its failures itself, once; the log is for -v.
	log := newLogger(stderr, &c.commonConfig, slog.LevelError)
	client := newClient(&c.commonConfig, log, stderr)
	defer client.Close()

	obj, err := probeGet(ctx, client, c, stderr)
	if err != nil {
		return err
	}
	if err := checkSize(&c.commonConfig, obj); err != nil {
		return err
	}
	out, err := outputPath(c.Output, obj.Name)
	if err != nil {
		return err
	}
	if err := checkOutput(out, c.Force); err != nil {
		return err
	}
	state := out + ".rangefs"

	if !obj.Ranges {
		return streamGet(ctx, c, obj, out, stderr)
	}

	for restart := 0; ; restart++ {
		err = fillOnce(ctx, c, obj, state, log, stderr)
		if errors.Is(err, fetch.ErrRangeIgnored) {
			// The server advertised ranges but answered with whole bodies.
			os.RemoveAll(state)
			return streamGet(ctx, c, obj, out, stderr)
		}
		if !errors.Is(err, cache.ErrStale) || restart == maxRestarts {
			break
		}
		fmt.Fprintln(stderr, "rangefs: the remote file changed during the download; starting over with the new version")
		if obj, err = probeGet(ctx, client, c, stderr); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	data := filepath.Join(state, "data")
	if c.SHA256 != "" {
		if err := checkSHA256(ctx, data, c.SHA256); err != nil {
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
	if !c.Quiet {
		fmt.Fprintf(stderr, "rangefs: saved %s (%s)\n", out, humanBytes(obj.Size))
	}
	return nil
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
func fillOnce(ctx context.Context, c *getConfig, obj *fetch.Object, dir string, log *slog.Logger, stderr io.Writer) error {
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
	}, obj, cache.Options{Pool: cache.NewPool(poolSize(c.Connections, obj)), Logger: log})
	if err != nil {
		return err
	}
	defer f.Close()
	if why := f.Discarded(); why != "" {
		fmt.Fprintf(stderr, "rangefs: discarded the partial download (%s); starting from scratch\n", why)
	}
	st := f.Stats()
	if st.Present > 0 && !c.Quiet {
		fmt.Fprintf(stderr, "rangefs: resuming: %s of %s already here\n", humanBytes(st.BytesPresent), humanBytes(st.Size))
	}
	prog := startProgress(stderr, c.Quiet, f.Stats)
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
			return err
		}
		err := f.Verify(ctx)
		if err == nil {
			return f.Close()
		}
		if !errors.Is(err, cache.ErrCorrupt) {
			return err
		}
		fmt.Fprintf(stderr, "rangefs: chunks from an earlier run failed their checksum (%v); fetching them again\n", err)
	}
	return errors.New("chunks keep failing their checksum; the disk may be faulty")
}

// streamGet is the fallback for a server that ignores Range: one GET into a
// temporary file beside the output, renamed into place when complete.
func streamGet(ctx context.Context, c *getConfig, obj *fetch.Object, out string, stderr io.Writer) error {
	fmt.Fprintf(stderr, "rangefs: warning: %s ignores Range requests; downloading in one stream (no parallelism, no resume)\n", obj.URL())
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
	prog := startProgress(stderr, c.Quiet, func() cache.Stats {
		return cache.Stats{Size: obj.Size, BytesPresent: cw.n.Load(), BytesFetched: cw.n.Load(), Active: 1}
	})
	err = obj.Stream(ctx, cw)
	prog.stop()
	if err != nil {
		return err
	}
	if cw.n.Load() != obj.Size {
		return fmt.Errorf("the server sent %d bytes, not the %d it announced", cw.n.Load(), obj.Size)
	}
	if c.SHA256 != "" && hex.EncodeToString(h.Sum(nil)) != c.SHA256 {
		return fmt.Errorf("%w: got sha256 %x, want %s; nothing was saved", errChecksum, h.Sum(nil), c.SHA256)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := publish(tmp.Name(), out, c.Force); err != nil {
		return err
	}
	if !c.Quiet {
		fmt.Fprintf(stderr, "rangefs: saved %s (%s)\n", out, humanBytes(obj.Size))
	}
	return nil
}

// outputPath decides where the file goes: -o as given (a directory means
// "inside it"), else the server's suggested name in the current directory.
// The suggested name comes from the network, so it is checked to be a plain
// name that stays in the directory.
func outputPath(flag, suggested string) (string, error) {
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
