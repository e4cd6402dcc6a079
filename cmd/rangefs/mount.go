package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"rangefs/cache"
	"rangefs/fetch"
	"rangefs/fs"
)

func runMount(ctx context.Context, c *mountConfig, stderr io.Writer) error {
	// A mount runs unattended: warnings (a read that failed, and why) show.
	log := newLogger(stderr, &c.commonConfig, slog.LevelWarn)
	hup := detachFromTerminal()
	defer signal.Stop(hup)
	if cleaned, err := fs.CleanStale(c.Mountpoint); err != nil {
		return err
	} else if cleaned {
		fmt.Fprintf(stderr, "rangefs: removed a stale mount left at %s by a process that died\n", c.Mountpoint)
	}
	if fi, err := os.Stat(c.Mountpoint); err != nil {
		return fmt.Errorf("mount point: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", c.Mountpoint)
	}
	if err := os.MkdirAll(c.CacheDir, 0o700); err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}

	load := &poolLoad{}
	client := newClient(&c.commonConfig, log, stderr, load)
	defer client.Close()
	probes, err := probeCandidates(ctx, client, c, stderr)
	if err != nil {
		return err
	}
	pool := cache.NewPool(poolSize(c.Connections, probedObjects(probes)...))
	load.set(pool)
	tctx, stopTree := context.WithCancel(context.Background())
	defer stopTree()
	t := &treeCtx{c: c, client: client, log: log, ctx: tctx, probes: make(chan struct{}, c.Connections),
		objects: newObjects(c, pool, log)}
	defer t.objects.close()

	srcs, files, err := resolveSources(ctx, c, t, pool, probes, stderr)
	defer func() {
		for _, f := range files {
			if err := f.Close(); err != nil {
				log.Warn("closing cache", "err", err)
			}
		}
	}()
	if err != nil {
		return err
	}
	var root fs.Dir
	if len(srcs) == 1 && srcs[0].dir != nil {
		root = srcs[0].dir // a single directory is the mount's root
	} else {
		entries := make([]fs.Entry, len(srcs))
		for i, s := range srcs {
			entries[i] = fs.Entry{Name: s.name, File: s.file, Dir: s.dir}
		}
		root = fs.Static(entries, time.Time{})
		if len(srcs) > 1 && !c.Quiet {
			for _, s := range srcs {
				fmt.Fprintf(stderr, "rangefs: %s is %s\n", s.name, s.what)
			}
		}
	}

	indexing := fs.NewArchiveIndexing()
	root = archiveRoot(c, root, probes, log, indexing)
	srv, err := fs.Mount(c.Mountpoint, root, fs.Options{
		OnlyOthersRead: true,
		OpTimeout:      c.OpTimeout, AllowOther: c.AllowOther, Debug: c.DebugFUSE, Logger: log,
		KernelReadAhead: c.KernelReadAhead,
		Passthrough:     !c.NoPassthrough, NoDirectIO: c.NoDirectIO, NoSplice: c.NoSplice, DirCacheTime: c.DirCacheTime, Ownership: c.Ownership,
		RootXattrs: func() []fs.Xattr {
			return append(budgetXattrs(c.CacheDir, c.Budget), archiveIndexingXattrs(indexing)...)
		},
	})
	if err != nil {
		return fmt.Errorf("%w (is fuse3 installed and /dev/fuse usable?)", err)
	}
	if !c.NoPrefetch {
		for _, f := range files {
			f.StartPrefetch()
		}
	}
	if !c.Quiet {
		fmt.Fprintf(stderr, "rangefs: mounted %s at %s; Ctrl-C or 'fusermount3 -u %s' to unmount\n",
			mountedWhat(srcs), c.Mountpoint, c.Mountpoint)
	}

	unmounted := make(chan struct{})
	go func() { srv.Wait(); close(unmounted) }()
	for {
		select {
		case <-hup:
			// Closing the terminal of `rangefs mount … &` must not take
			// the mount down. SIGHUP makes every directory be listed again.
			srv.Forget()
			log.Info("SIGHUP: directory listings forgotten; each is listed again at its next access")
		case <-unmounted:
			return nil
		case <-ctx.Done():
			// Stop fetching first, so reads in flight fail at once instead
			// of holding the unmount up; then detach.
			for _, f := range files {
				f.Close()
			}
			t.objects.close()
			stopTree()
			if err := srv.Unmount(); err != nil {
				log.Warn("unmount", "err", err)
			}
			select {
			case <-unmounted:
			case <-time.After(5 * time.Second):
				log.Warn("the kernel did not finish the unmount in 5 s; exiting anyway")
			}
			return nil
		}
	}
}

// detachFromTerminal keeps a long-running command alive when its terminal
// or the reader of its output goes away. SIGPIPE is ignored, so a write to a
// closed stderr fails with EPIPE (log writes ignore that) instead of killing
// the process; SIGHUP is delivered to the returned channel instead of killing.
func detachFromTerminal() chan os.Signal {
	signal.Ignore(syscall.SIGPIPE)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup
}

// checkRanges makes sure the server really answers ranges before a file is
// mounted: some advertise "Accept-Ranges: bytes" on HEAD and still send the
// whole body to a ranged GET, which would make every read fail later.
func checkRanges(ctx context.Context, o *fetch.Object) error {
	err := fetch.ErrRangeIgnored
	if o.Ranges {
		if o.Size == 0 {
			return nil
		}
		err = o.Fetch(ctx, 0, 1, io.Discard)
	}
	if errors.Is(err, fetch.ErrRangeIgnored) {
		return fmt.Errorf("%s: %w: the server answered a Range request with the whole file; "+
			"it cannot be mounted (rangefs get can still download it)", o.URL(), fetch.ErrRangeIgnored)
	}
	return err
}

// probeAll probes the URLs concurrently and reports the first failure in
// argument order (its error names its URL).
func probeAll(ctx context.Context, client *fetch.Client, urls []string) ([]*fetch.Object, error) {
	objs := make([]*fetch.Object, len(urls))
	errs := make([]error, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Go(func() { objs[i], errs[i] = client.Probe(ctx, u) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// cacheIdentity is what a cache of o, probed at rawURL, is keyed by: its
// URL's identity, without the query when that changes from run to run (a
// signed URL's, or any with --volatile-query).
func cacheIdentity(o *fetch.Object, rawURL string, volatileQuery bool) string {
	if volatileQuery || signedQuery(rawURL) {
		return o.IdentityNoQuery()
	}
	return o.Identity()
}

// signedQuery reports whether the URL's query carries a signature that is
// replaced when the URL is re-signed (S3, GCS, Azure SAS, CloudFront), so the
// cache must not be keyed by it.
func signedQuery(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	for k := range u.Query() {
		switch strings.ToLower(k) {
		case "x-amz-signature", "x-amz-credential", "x-goog-signature", "x-goog-credential",
			"sig", "signature", "key-pair-id":
			return true
		}
	}
	return false
}

// uniqueName returns name, or name with "-2", "-3"... before its extension
// when an earlier URL already took it.
func uniqueName(taken map[string]bool, name string) string {
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	cand := name
	for i := 2; taken[cand]; i++ {
		cand = fmt.Sprintf("%s-%d%s", stem, i, ext)
	}
	taken[cand] = true
	return cand
}

func lastModified(o *fetch.Object) time.Time {
	t, err := http.ParseTime(o.LastModified)
	if err != nil {
		return time.Time{}
	}
	return t
}
