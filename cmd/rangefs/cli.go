package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// exitCodesHelp documents the exit codes in --help and in the man page; it
// is built from the constants, so the two cannot disagree.
var exitCodesHelp = fmt.Sprintf(`Exit codes:
  %d  success
  %d  a local failure (a file, a directory, permissions), or anything not listed
  %d  a usage error: bad flags, a bad URL, an unsuitable output path
  %d  a network failure: unreachable, an HTTP error status, no Range support
  %d  the remote file changed while it was read
  %d  the checksum did not match (--sha256, --checksum)
  %d  no space left for the file or the cache
  %d  interrupted (Ctrl-C, SIGTERM)
`, exitOK, exitFailure, exitUsage, exitNetwork, exitChanged, exitChecksum, exitDiskFull, exitInterrupted)

const rootLong = `rangefs makes a remote file usable before it has arrived: 'rangefs mount'
shows URLs as read-only local files whose reads become parallel HTTP Range
requests, kept in a cache that survives unmount, crash and reboot; 'rangefs
get' is the same engine as a parallel, resumable downloader.
`

// commandSpec is what every subcommand shares: the usage errors and help go
// where the caller says, and nothing in it calls os.Exit.
func newCommand(use, short, long string) *cobra.Command {
	cmd := &cobra.Command{
		Use:                   use,
		Short:                 short,
		Long:                  long,
		Args:                  cobra.ArbitraryArgs,
		SilenceErrors:         true,
		SilenceUsage:          true,
		DisableFlagsInUseLine: true,
	}
	cmd.Flags().SortFlags = false
	cmd.SetUsageTemplate(cmd.UsageTemplate() + "\n" + exitCodesHelp)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usagef("%v", err) })
	return cmd
}

// getCommand is `rangefs get`; run receives the checked configuration.
func getCommand(env Env, run func(*getConfig) error) *cobra.Command {
	c := &getConfig{}
	cmd := newCommand("get [flags] URL", "download a URL in parallel, resumable", getUsage)
	finish := getFlags(cmd.Flags(), c)
	cmd.RunE = func(_ *cobra.Command, args []string) error {
		if err := finish(env, args); err != nil {
			return err
		}
		return run(c)
	}
	return cmd
}

// mountCommand is `rangefs mount`; run receives the checked configuration.
func mountCommand(env Env, run func(*mountConfig) error) *cobra.Command {
	c := &mountConfig{}
	cmd := newCommand("mount [flags] URL... MOUNTPOINT", "show URLs as lazily fetched read-only files", mountUsage)
	finish := mountFlags(cmd.Flags(), c)
	cmd.RunE = func(_ *cobra.Command, args []string) error {
		if err := finish(env, args); err != nil {
			return err
		}
		return run(c)
	}
	return cmd
}

// statusCommand is `rangefs status`; run receives the checked configuration.
func statusCommand(env Env, run func(*statusConfig) error) *cobra.Command {
	c := &statusConfig{}
	cmd := newCommand("status [MOUNTPOINT | --cache-dir DIR]", "show what is cached", statusUsage)
	finish := statusFlags(cmd.Flags(), c)
	cmd.RunE = func(_ *cobra.Command, args []string) error {
		if err := finish(env, args); err != nil {
			return err
		}
		return run(c)
	}
	return cmd
}

// parseWith runs one subcommand's parser on args without running the
// command: it returns the configuration, a usage error, or errHelp when
// --help printed the help to out.
func parseWith[C any](args []string, out io.Writer, build func(run func(*C) error) *cobra.Command) (*C, error) {
	var got *C
	cmd := build(func(c *C) error { got = c; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(out)
	cmd.SetErr(out)
	if err := cmd.Execute(); err != nil {
		return nil, err
	}
	if got == nil {
		return nil, errHelp
	}
	return got, nil
}

// rootCommand is the whole command tree. Each subcommand's work runs with
// ctx and reports to stdout and stderr; errors are returned, never printed
// or turned into an exit here.
func rootCommand(ctx context.Context, args []string, env Env, stdout, stderr io.Writer) *cobra.Command {
	root := newCommand("rangefs", "remote files usable before they have arrived", rootLong)
	root.Version = version
	root.SetVersionTemplate("rangefs {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SuggestionsMinimumDistance = 2
	// `rangefs` alone, or an unknown word: a usage error, with cobra's
	// "did you mean" suggestions.
	root.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			cmd.SetOut(stderr)
			cmd.Usage()
			return usagef("no command given")
		}
		msg := fmt.Sprintf("unknown command %q", args[0])
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf("; did you mean %s?", strings.Join(quoteAll(s), " or "))
		}
		return usagef("%s (see rangefs --help)", msg)
	}
	root.AddCommand(
		getCommand(env, func(c *getConfig) error { return runGet(ctx, c, stdout, stderr) }),
		mountCommand(env, func(c *mountConfig) error { return runMountCLI(ctx, c, args, stderr) }),
		statusCommand(env, func(c *statusConfig) error { return runStatus(ctx, c, stdout) }),
		unmountCommand(),
		cacheCommand(env, stdout),
		versionCommand(stdout),
		manCommand(root),
	)
	// cobra's completion command shows its help, and succeeds, for a shell
	// it does not know: make that a usage error.
	root.InitDefaultCompletionCmd()
	if c, _, err := root.Find([]string{"completion"}); err == nil && c != root {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("completion knows bash, zsh, fish and powershell, not %q", args[0])
			}
			return nil
		}
		c.RunE = func(cmd *cobra.Command, args []string) error {
			return usagef("completion needs a shell: bash, zsh, fish or powershell (see rangefs completion --help)")
		}
	}
	return root
}

func versionCommand(stdout io.Writer) *cobra.Command {
	cmd := newCommand("version", "print the version", "Print the version of rangefs.\n")
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(*cobra.Command, []string) error {
		fmt.Fprintln(stdout, "rangefs", version)
		return nil
	}
	return cmd
}

func quoteAll(s []string) []string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return q
}

// errHelp is returned by the parsers when the user asked for --help; the
// help has already been printed.
var errHelp = errors.New("help requested")
