package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"rangefs/cache"
)

const cacheUsage = `See and prune the cache directory (every object cached under --cache-dir,
default: the default cache directory):

  rangefs cache ls                 each object: ID, URL, size, cached bytes, last use, PID using it
  rangefs cache rm URL|ID...       remove objects (not those a running rangefs holds)
  rangefs cache prune [--max-size SIZE] [--older-than DURATION]
                                   remove objects not in use, least recently used first
`

// cacheCommand is `rangefs cache` and its subcommands.
func cacheCommand(env Env, stdout io.Writer) *cobra.Command {
	cmd := newCommand("cache ls|rm|prune", "see and prune the cache", cacheUsage)
	var dir string
	cmd.PersistentFlags().StringVar(&dir, "cache-dir", "", "the cache directory (default $XDG_CACHE_HOME/rangefs or ~/.cache/rangefs)")
	root := func() string {
		if dir == "" {
			return defaultCacheDir(env)
		}
		return filepath.Clean(dir)
	}
	cmd.RunE = func(*cobra.Command, []string) error {
		return usagef("cache needs ls, rm or prune; see rangefs cache --help")
	}

	ls := newCommand("ls [--cache-dir DIR]", "list cached objects", "List every object cached in the cache directory.\n")
	ls.Args = cobra.NoArgs
	ls.RunE = func(*cobra.Command, []string) error {
		es, err := cache.List(root())
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		defer tw.Flush()
		fmt.Fprintln(tw, "ID\tSIZE\tCACHED\tLAST USE\tPID\tURL")
		for _, e := range es {
			pid, last := "-", "-"
			if e.PID != 0 {
				pid = strconv.Itoa(e.PID)
			}
			if !e.LastUse.IsZero() {
				last = e.LastUse.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, humanBytes(e.Size), humanBytes(e.Cached), last, pid, e.URL)
		}
		return nil
	}

	rm := newCommand("rm URL|ID...", "remove cached objects", "Remove the named objects from the cache directory.\n")
	rm.RunE = func(_ *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usagef("cache rm needs at least one URL or ID (see rangefs cache ls)")
		}
		removed, err := cache.Remove(root(), args...)
		for _, e := range removed {
			fmt.Fprintf(stdout, "removed %s %s (%s)\n", e.ID, e.URL, humanBytes(e.Cached))
		}
		return err
	}

	prune := newCommand("prune [--max-size SIZE] [--older-than DURATION]", "remove least recently used objects",
		"Remove objects no running rangefs holds: those last used longer ago than\n--older-than, then the least recently used until the cache holds at most --max-size.\n")
	prune.Args = cobra.NoArgs
	var maxSize int64
	var older time.Duration
	prune.Flags().Var(sizeFlag{&maxSize}, "max-size", "remove least recently used objects until the cache holds at most SIZE")
	prune.Flags().DurationVar(&older, "older-than", 0, "remove objects last used longer ago than DURATION (e.g. 720h)")
	prune.RunE = func(*cobra.Command, []string) error {
		if maxSize == 0 && older <= 0 {
			return usagef("cache prune needs --max-size or --older-than")
		}
		removed, err := cache.Prune(root(), maxSize, older)
		var freed int64
		for _, e := range removed {
			freed += e.Cached
			fmt.Fprintf(stdout, "removed %s %s (%s)\n", e.ID, e.URL, humanBytes(e.Cached))
		}
		fmt.Fprintf(stdout, "pruned %d object(s), %s\n", len(removed), humanBytes(freed))
		return err
	}
	cmd.AddCommand(ls, rm, prune)
	return cmd
}
