package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// Help goes to stdout for every command, lists every flag and the exit
// codes, and exits 0; nothing goes to stderr.
func TestHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"get", "--help"}, {"mount", "--help"}, {"status", "-h"}, {"help", "get"}} {
		cmd := exec.Command(binary, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("rangefs %q: %v", args, err)
		}
		if stderr.Len() != 0 {
			t.Errorf("rangefs %q wrote to stderr: %s", args, stderr.String())
		}
		for _, want := range []string{"Usage:", "Exit codes:", "  6  no space left"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("rangefs %q: help lacks %q:\n%s", args, want, stdout.String())
			}
		}
	}
}

// A misspelt command is a usage error that suggests the right one.
func TestUnknownCommandSuggests(t *testing.T) {
	r := rangefs(t, t.TempDir(), "mout", "http://h/f", "m")
	if r.code != exitUsage || !strings.Contains(r.stderr, `did you mean "mount"?`) {
		t.Errorf("exit %d, stderr %q; want %d and a suggestion", r.code, r.stderr, exitUsage)
	}
}

// Completions for the three shells, and man pages that carry every flag of
// the command they describe and the exit codes.
func TestCompletionAndManPages(t *testing.T) {
	for shell, want := range map[string]string{"bash": "complete -o default", "zsh": "#compdef rangefs", "fish": "complete -c rangefs"} {
		out, err := exec.Command(binary, "completion", shell).Output()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("completion %s: %v; output lacks %q", shell, err, want)
		}
	}
	// A shell it does not know, or none: a usage error, not the help and success.
	for _, args := range [][]string{{"completion", "nosuchshell"}, {"completion"}} {
		if r := rangefs(t, t.TempDir(), args...); r.code != exitUsage || !strings.Contains(r.stderr, "bash, zsh, fish") {
			t.Errorf("rangefs %q: exit %d, %q; want %d naming the shells", args, r.code, r.stderr, exitUsage)
		}
	}
	dir := t.TempDir()
	if out, err := exec.Command(binary, "gen-man", dir).CombinedOutput(); err != nil {
		t.Fatalf("gen-man: %v\n%s", err, out)
	}
	for _, page := range []string{"rangefs.1", "rangefs-get.1", "rangefs-mount.1", "rangefs-status.1"} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "Exit codes") || !strings.Contains(string(b), "no space left") {
			t.Errorf("%s does not document the exit codes", page)
		}
	}
	mount, _ := os.ReadFile(filepath.Join(dir, "rangefs-mount.1"))
	fs := mountCommand(noEnv, nil).Flags()
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		n++
		if !strings.Contains(string(mount), `\fB--`+f.Name+`\fP`) {
			t.Errorf("rangefs-mount.1 lacks --%s", f.Name)
		}
	})
	if n < 10 {
		t.Errorf("mount has only %d flags", n)
	}
}
