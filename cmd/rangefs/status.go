package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"rangefs/cache"
)

func runStatus(ctx context.Context, c *statusConfig, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	if c.Target != "" {
		st, err := statusMount(ctx, c.Target, c.Timeout)
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, statusHeader)
		for _, r := range st.rows {
			statusRow(tw, r.name, r.size, r.cached, r.chunks, r.url)
		}
		tw.Flush()
		if st.budget != "" {
			fmt.Fprintln(stdout, st.budget)
		}
		for _, l := range st.archives {
			fmt.Fprintln(stdout, l)
		}
		return nil
	}
	ents, err := os.ReadDir(c.CacheDir)
	if errors.Is(err, os.ErrNotExist) || err == nil && len(ents) == 0 {
		fmt.Fprintf(stdout, "no cache yet at %s: nothing has been mounted or downloaded with it\n", c.CacheDir)
		return nil
	}
	fmt.Fprintln(tw, statusHeader)
	err = statusCacheDir(tw, c.CacheDir)
	tw.Flush()
	budgetStatus(stdout, c.CacheDir)
	return err
}

const statusHeader = "FILE\tSIZE\tCACHED\t%\tCHUNKS\tURL"

// mountRow is one file of a mount, as its attributes describe it.
type mountRow struct {
	name, chunks, url string
	size, cached      int64
}

// mountStatus is what a mount tells of itself: its files, and the line of
// its cache budget ("" from a mount that does not show one), and a line per
// tar.gz archive whose indexing pass runs or failed.
type mountStatus struct {
	rows     []mountRow
	budget   string
	archives []string
}

// statusMount asks a running mount about its files. A mount whose daemon is
// stopped or hung never answers, and a thread waiting on it in the kernel
// cannot be interrupted; so the requests run in a goroutine, and statusMount
// gives up when one of them takes longer than timeout, or when ctx ends
// (SIGTERM, Ctrl-C). The process may then exit with that goroutine stuck.
func statusMount(ctx context.Context, dir string, timeout time.Duration) (mountStatus, error) {
	type answer struct {
		st  mountStatus
		err error
	}
	progress := make(chan struct{}, 1)
	done := make(chan answer, 1)
	go func() {
		st, err := readMountStatus(dir, func() {
			select {
			case progress <- struct{}{}:
			default:
			}
		})
		done <- answer{st, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case a := <-done:
			return a.st, a.err
		case <-progress:
			t.Reset(timeout)
		case <-t.C:
			return mountStatus{}, fmt.Errorf("the mount at %s is not answering (no reply in %v: its daemon is stopped or hung); "+
				"unmount it with: fusermount3 -u %s", dir, timeout, dir)
		case <-ctx.Done():
			return mountStatus{}, fmt.Errorf("waiting for the mount at %s: %w", dir, ctx.Err())
		}
	}
}

// readMountStatus reads the user.rangefs.* attributes the mount exposes, so
// it works without touching the mount's cache directory (which that process
// holds). answered is called after each request the mount answers.
func readMountStatus(dir string, answered func()) (mountStatus, error) {
	var rows []mountRow
	if err := walkMountStatus(dir, "", answered, &rows); errors.Is(err, syscall.ENOTCONN) {
		return mountStatus{}, fmt.Errorf("the rangefs process for %s died (%w); run fusermount3 -u %s, then mount it again", dir, err, dir)
	} else if err != nil {
		return mountStatus{}, err
	}
	get := xattrGetter(dir, answered)
	if len(rows) == 0 && get("listed") == "" {
		// A mount of archives only shows no file until one is listed.
		return mountStatus{}, fmt.Errorf("%s is not a rangefs mount (no user.rangefs.* attributes)", dir)
	}
	return mountStatus{rows: rows, budget: mountBudgetLine(get), archives: archiveIndexingLines(get(archiveIndexingXattr))}, nil
}

// xattrGetter returns a reader of path's user.rangefs.NAME attributes ("" for
// one that is missing); answered is called after each request.
func xattrGetter(path string, answered func()) func(name string) string {
	return func(name string) string {
		defer answered()
		buf := make([]byte, 4096)
		n, err := syscall.Getxattr(path, "user.rangefs."+name, buf)
		if errors.Is(err, syscall.ERANGE) {
			// A long one (archive_indexing): ask its size.
			if n, err = syscall.Getxattr(path, "user.rangefs."+name, nil); err == nil && n <= 1<<16 {
				buf = make([]byte, n)
				n, err = syscall.Getxattr(path, "user.rangefs."+name, buf)
			}
		}
		if err != nil || n > len(buf) {
			return ""
		}
		return string(buf[:n])
	}
}

// walkMountStatus adds the rows of the files below dir/rel, descending only
// into directories the mount has listed already, so that status never makes
// the mount list a remote tree.
func walkMountStatus(dir, rel string, answered func(), rows *[]mountRow) error {
	ents, err := os.ReadDir(filepath.Join(dir, rel))
	if err != nil {
		return err
	}
	answered()
	for _, e := range ents {
		name := filepath.Join(rel, e.Name())
		get := xattrGetter(filepath.Join(dir, name), answered)
		if e.IsDir() {
			if get("listed") == "1" {
				if err := walkMountStatus(dir, name, answered, rows); err != nil {
					return err
				}
			}
			continue
		}
		size, err1 := strconv.ParseInt(get("size"), 10, 64)
		cached, err2 := strconv.ParseInt(get("cached_bytes"), 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		*rows = append(*rows, mountRow{name: name, size: size, cached: cached, chunks: get("chunks"), url: get("url")})
	}
	return nil
}

func statusCacheDir(w io.Writer, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") { // .budget: the budget's ledger
			continue
		}
		m, st, err := cache.Inspect(filepath.Join(dir, e.Name()))
		switch {
		case errors.Is(err, cache.ErrLocked):
			fmt.Fprintf(w, "%s\t-\t-\t-\t-\tin use by a running rangefs\n", e.Name())
		case err != nil:
			fmt.Fprintf(w, "%s\t-\t-\t-\t-\tunreadable: %v\n", e.Name(), err)
		default:
			statusRow(w, e.Name(), st.Size, st.BytesPresent, fmt.Sprintf("%d/%d", st.Present, st.Chunks), m.URL)
		}
	}
	return nil
}

func statusRow(w io.Writer, name string, size, cached int64, chunks, url string) {
	pct := 100.0
	if size > 0 {
		pct = 100 * float64(cached) / float64(size)
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%.1f\t%s\t%s\n", name, humanBytes(size), humanBytes(cached), pct, chunks, url)
}
