package main

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"rangefs/cache"
	"rangefs/fs"
)

// budgetConfig is the cache budget of a mount: --cache-max-size and
// --cache-min-free, both for the whole cache root.
type budgetConfig struct {
	MaxSize        int64   // 0: no size limit
	MinFree        int64   // bytes; 0: MinFreePercent
	MinFreePercent float64 // of the cache's file system
}

// sizeFlag is a pflag.Value holding a size (see parseSize).
type sizeFlag struct{ v *int64 }

func (s sizeFlag) String() string {
	if s.v == nil || *s.v == 0 {
		return ""
	}
	return humanBytes(*s.v)
}
func (s sizeFlag) Type() string { return "SIZE" }
func (s sizeFlag) Set(x string) error {
	n, err := parseSize(x)
	if err != nil {
		return err
	}
	*s.v = n
	return nil
}

// minFreeFlag is SIZE or PCT% of free space to keep.
type minFreeFlag struct{ c *budgetConfig }

func (m minFreeFlag) String() string {
	if m.c.MinFree > 0 {
		return humanBytes(m.c.MinFree)
	}
	return strconv.FormatFloat(m.c.MinFreePercent, 'f', -1, 64) + "%"
}
func (m minFreeFlag) Type() string { return "SIZE|PCT" }
func (m minFreeFlag) Set(x string) error {
	if p, ok := strings.CutSuffix(strings.TrimSpace(x), "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v >= 100 {
			return fmt.Errorf("%q is not a percentage below 100%%", x)
		}
		m.c.MinFree, m.c.MinFreePercent = 0, v
		return nil
	}
	n, err := parseSize(x)
	if err != nil {
		return err
	}
	m.c.MinFree, m.c.MinFreePercent = n, 0
	return nil
}

// budgetFlags registers the budget flags on fs; their values are checked as
// they are parsed.
func budgetFlags(fs *pflag.FlagSet, c *budgetConfig) {
	c.MinFreePercent = 5
	fs.Var(sizeFlag{&c.MaxSize}, "cache-max-size", "most bytes the whole cache directory keeps on disk, for every object in it (default: no size limit); least recently used chunks are evicted")
	fs.Var(minFreeFlag{c}, "cache-min-free", "free space the cache leaves on its file system, as SIZE or PCT%")
}

// limits returns the cache options for c (nil: nothing to enforce).
func (c *budgetConfig) limits(log *slog.Logger) *cache.BudgetOptions {
	if c.MaxSize == 0 && c.MinFree == 0 && c.MinFreePercent == 0 {
		return nil
	}
	return &cache.BudgetOptions{MaxSize: c.MaxSize, MinFree: c.MinFree, MinFreePercent: c.MinFreePercent, Logger: log}
}

// budgetStatus is the budget line of `rangefs status --cache-dir`.
func budgetStatus(w io.Writer, root string) {
	used, n, limit, ok := cache.RootUsage(root)
	switch {
	case !ok:
	case limit > 0:
		fmt.Fprintf(w, "cache budget: %s used of %s (%.0f%%), %d object(s)\n", humanBytes(used), humanBytes(limit), 100*float64(used)/float64(limit), n)
	default:
		fmt.Fprintf(w, "cache budget: %s used, no size limit, %d object(s)\n", humanBytes(used), n)
	}
}

// budgetXattrs are the mount root's user.rangefs.budget_* attributes, which
// `rangefs status MOUNTPOINT` reads: the budget of root as this process
// holds it, or, before any file has opened it, the ledger's count and the
// flags.
func budgetXattrs(root string, c budgetConfig) []fs.Xattr {
	u := cache.BudgetUsage{Limit: c.MaxSize, MinFree: c.MinFree, MinFreePercent: c.MinFreePercent,
		Evictions: cache.RootEvictions(root)}
	found := false
	for _, b := range cache.ProcessBudgets() {
		if filepath.Clean(b.Root()) == filepath.Clean(root) {
			if bu, err := b.Usage(); err == nil {
				u, found = bu, true
			}
		}
	}
	if !found {
		u.Used, u.Objects, _, _ = cache.RootUsage(root)
	}
	minFree := strconv.FormatInt(u.MinFree, 10)
	if u.MinFreePercent > 0 {
		minFree = strconv.FormatFloat(u.MinFreePercent, 'f', -1, 64) + "%"
	}
	n := strconv.FormatInt
	return []fs.Xattr{
		{Name: "budget_used", Value: n(u.Used, 10)},
		{Name: "budget_limit", Value: n(u.Limit, 10)},
		{Name: "budget_min_free", Value: minFree},
		{Name: "budget_pinned", Value: n(u.Pinned, 10)},
		{Name: "budget_evictions", Value: n(u.Evictions, 10)},
	}
}

// mountBudgetLine is the budget line of `rangefs status MOUNTPOINT`, from
// the attributes budgetXattrs gives the mount's root (get returns "" for
// one that is missing: a mount of an older rangefs).
func mountBudgetLine(get func(name string) string) string {
	used, err1 := strconv.ParseInt(get("budget_used"), 10, 64)
	limit, err2 := strconv.ParseInt(get("budget_limit"), 10, 64)
	if err1 != nil || err2 != nil {
		return ""
	}
	pinned, _ := strconv.ParseInt(get("budget_pinned"), 10, 64)
	evicted, _ := strconv.ParseInt(get("budget_evictions"), 10, 64)
	line := "cache budget: " + humanBytes(used) + " used, no cap"
	if limit > 0 {
		line = fmt.Sprintf("cache budget: %s used of %s (%.0f%%)", humanBytes(used), humanBytes(limit), 100*float64(used)/float64(limit))
	}
	minFree := get("budget_min_free")
	if v, err := strconv.ParseInt(minFree, 10, 64); err == nil {
		minFree = humanBytes(v)
	}
	if minFree != "" && minFree != "0" && minFree != humanBytes(0) {
		line += ", min free " + minFree
	}
	return line + fmt.Sprintf(", %s pinned, %d chunk(s) evicted since mount", humanBytes(pinned), evicted)
}
