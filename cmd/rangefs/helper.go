package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
)

// mount(8) runs /sbin/mount.fuse.rangefs for a file system of type
// fuse.rangefs (an fstab line, or mount -t fuse.rangefs) as
//
//	mount.fuse.rangefs SOURCE DIR [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]
//
// and, when that helper is missing, mount.fuse3 runs `rangefs SOURCE DIR
// -o OPTIONS` found on its PATH. Both forms become `rangefs mount --daemon -o
// OPTIONS SOURCE DIR`: the mount options are rangefs's own flags written
// rclone-style (cache_dir=/x is --cache-dir=/x), and mount(8) gets its answer
// only once the mount is up.

// helperName reports whether the program was called as the mount(8) helper.
func helperName(argv0 string) bool {
	b := filepath.Base(argv0)
	return b == "mount.fuse.rangefs" || b == "mount.rangefs" || b == "mount.fuse3.rangefs"
}

// looksLikeHelperCall reports whether args are mount.fuse3's `rangefs
// SOURCE DIR -o OPTS` rather than a subcommand.
func looksLikeHelperCall(args []string) bool {
	return len(args) >= 2 && (strings.Contains(args[0], "://") || strings.HasPrefix(args[0], "rangefs#"))
}

// helperArgs turns mount(8)'s argv (without the program name) into the
// arguments of `rangefs mount`. fake is mount -f: do everything but mount,
// which for us is nothing.
func helperArgs(argv []string) (args []string, fake bool, err error) {
	fs := pflag.NewFlagSet("mount.fuse.rangefs", pflag.ContinueOnError)
	fs.SetInterspersed(true)
	fs.Usage = func() {}
	var opts []string
	var sloppy, noMtab, verbose bool
	var typ, ns string
	fs.StringArrayVarP(&opts, "options", "o", nil, "")
	fs.BoolVarP(&sloppy, "sloppy", "s", false, "")
	fs.BoolVarP(&fake, "fake", "f", false, "")
	fs.BoolVarP(&noMtab, "no-mtab", "n", false, "")
	fs.BoolVarP(&verbose, "verbose", "v", false, "")
	fs.StringVarP(&typ, "types", "t", "", "")
	fs.StringVarP(&ns, "namespace", "N", "", "")
	if err := fs.Parse(argv); err != nil {
		return nil, false, usagef("mount.fuse.rangefs: %v (usage: mount.fuse.rangefs URL DIR [-o OPTIONS])", err)
	}
	if ns != "" {
		return nil, false, usagef("mount.fuse.rangefs: -N (mount namespaces) is not supported")
	}
	if fs.NArg() != 2 {
		return nil, false, usagef("mount.fuse.rangefs takes a source URL and a mount point (got %d arguments)", fs.NArg())
	}
	src := strings.TrimPrefix(fs.Arg(0), "rangefs#")
	args = []string{"mount", "--daemon"}
	if verbose {
		args = append(args, "-v")
	}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	return append(args, src, fs.Arg(1)), fake, nil
}

// mountOptionIgnored lists what belongs to mount(8), systemd or the kernel
// rather than to rangefs: accepted in -o and fstab, and ignored. A rangefs
// mount is always read-only, nosuid and nodev in effect.
func mountOptionIgnored(key string) bool {
	switch key {
	case "ro", "rw", "user", "users", "nouser", "owner", "group", "noauto", "auto", "_netdev", "nofail",
		"defaults", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync", "async",
		"atime", "noatime", "relatime", "norelatime", "strictatime", "diratime", "nodiratime",
		"lazytime", "nolazytime", "silent", "loud", "default_permissions", "fsname", "subtype",
		"comment", "noforget", "rootmode", "blksize", "max_read":
		return true
	}
	return strings.HasPrefix(key, "x-") || strings.HasPrefix(key, "X-")
}

// translateOptions turns one -o list ("ro,cache_dir=/x,connections=16,
// env.HTTPS_PROXY=http://p:3128") into flag arguments (--cache-dir=/x
// --connections=16) and environment settings (HTTPS_PROXY).
func translateOptions(list string) (flags []string, env map[string]string, err error) {
	flags, _, env, err = translateOptionsNamed(list)
	return flags, env, err
}

// translateOptionsNamed is translateOptions that also returns, for each
// flag, the option as written (for error messages).
func translateOptionsNamed(list string) (flags, written []string, env map[string]string, err error) {
	env = map[string]string{}
	for _, o := range strings.Split(list, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		key, val, hasVal := strings.Cut(o, "=")
		if name, ok := strings.CutPrefix(key, "env."); ok {
			if name == "" || !hasVal {
				return nil, nil, nil, usagef("mount option %q: write env.NAME=VALUE", key)
			}
			env[name] = val
			continue
		}
		if mountOptionIgnored(key) {
			continue
		}
		if strings.HasPrefix(key, "-") || key == "" {
			return nil, nil, nil, usagef("mount option %q: write options without dashes (cache_dir=/x)", key)
		}
		flag := "--" + strings.ReplaceAll(key, "_", "-")
		if hasVal {
			flag += "=" + val
		}
		flags = append(flags, flag)
		written = append(written, o)
	}
	return flags, written, env, nil
}

// applyOptions parses the -o lists into fs, after its own flags (so an
// option overrides a flag given before it). Unknown options are usage errors
// that name the option as it was written.
func applyOptions(fs *pflag.FlagSet, lists []string) (map[string]string, error) {
	env := map[string]string{}
	for _, l := range lists {
		flags, written, e, err := translateOptionsNamed(l)
		if err != nil {
			return nil, err
		}
		for k, v := range e {
			env[k] = v
		}
		for i, f := range flags {
			// One at a time, so the error names the option that failed.
			if err := fs.Parse([]string{f}); err != nil {
				return nil, usagef("mount option %s: %v", written[i], err)
			}
		}
	}
	return env, nil
}

// overlayEnv looks names up in extra first.
func overlayEnv(extra map[string]string, env Env) Env {
	if len(extra) == 0 {
		return env
	}
	return func(k string) string {
		if v, ok := extra[k]; ok {
			return v
		}
		return env(k)
	}
}

// helperMain is main for the mount(8) forms; it returns the exit code.
func helperMain(argv []string, stderr io.Writer, run func([]string) int) int {
	args, fake, err := helperArgs(argv)
	if err != nil {
		fmt.Fprintf(stderr, "rangefs: %v\n", err)
		return exitUsage
	}
	if fake {
		return exitOK
	}
	return run(args)
}
