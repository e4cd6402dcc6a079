package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"text/tabwriter"

	"rangefs/cache"
)

func runStatus(c *statusConfig, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "FILE\tSIZE\tCACHED\t%\tCHUNKS\tURL")
	if c.Target != "" {
		return statusMount(tw, c.Target)
	}
	return statusCacheDir(tw, c.CacheDir)
}

// statusMount reads the user.rangefs.* attributes the mount exposes, so it
// works without touching the mount's cache directory (which that process holds).
func statusMount(w io.Writer, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	found := false
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		get := func(name string) string {
			buf := make([]byte, 4096)
			n, err := syscall.Getxattr(p, "user.rangefs."+name, buf)
			if err != nil {
				return ""
			}
			return string(buf[:n])
		}
		size, err1 := strconv.ParseInt(get("size"), 10, 64)
		cached, err2 := strconv.ParseInt(get("cached_bytes"), 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		found = true
		statusRow(w, e.Name(), size, cached, get("chunks"), get("url"))
	}
	if !found {
		return fmt.Errorf("%s is not a rangefs mount (no user.rangefs.* attributes)", dir)
	}
	return nil
}

func statusCacheDir(w io.Writer, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() {
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
