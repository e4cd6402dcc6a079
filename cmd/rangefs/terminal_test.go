package main

// Progress in a real pseudo-terminal: tmux runs rangefs get in a pane of a
// given width, and the pane is captured while it runs.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"rangefs/fetch/fetchtest"
)

var summaryRE = regexp.MustCompile(`^rangefs: saved out\.bin \(6\.0 MiB\) in [0-9]+\.[0-9]+s, [0-9.]+ (B|KiB|MiB|GiB)/s average$`)

func TestProgressInTerminal(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("skipping: tmux is not installed (.ci/run installs it)")
	}
	for _, width := range []int{60, 200} {
		t.Run(strconv.Itoa(width), func(t *testing.T) { progressInTerminal(t, width) })
	}
}

func progressInTerminal(t *testing.T, width int) {
	srv, p := patternServer(t, 6<<20, 81, fetchtest.WithConnRate(1<<20))
	dir := t.TempDir()
	sock := filepath.Join(dir, "tmux.sock")
	conf := filepath.Join(dir, "tmux.conf")
	// tmux copies a screen cleared from its top row into its history;
	// off, the history shows exactly what scrolled off the screen.
	os.WriteFile(conf, []byte("set -g scroll-on-clear off\nset -g history-limit 1000\n"), 0o600)
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("tmux", append([]string{"-S", sock, "-f", conf}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %q: %v: %s", args, err, out)
		}
		return string(out)
	}
	shell := "cd " + dir + " && " + binary + " get -j 2 --chunk-size 256K -o out.bin " + srv.URL() + "; echo EXIT=$?; sleep 120"
	tmux("new-session", "-d", "-x", strconv.Itoa(width), "-y", "12", shell)
	t.Cleanup(func() { exec.Command("tmux", "-S", sock, "kill-server").Run() })

	lines := func(history bool) []string {
		args := []string{"capture-pane", "-p", "-J"}
		if history {
			args = append(args, "-S", "-")
		}
		var ls []string
		for _, l := range strings.Split(tmux(args...), "\n") {
			if l = strings.TrimRight(l, " "); l != "" {
				ls = append(ls, l)
			}
		}
		return ls
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(time.Minute)
	var final []string
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no EXIT= in the pane within a minute: %q", lines(false))
		}
		ls := lines(false)
		if len(ls) > 0 && strings.HasPrefix(ls[len(ls)-1], "EXIT=") {
			final = ls
			break
		}
		if len(ls) > 1 {
			t.Fatalf("%d lines on the screen during the download, want one rewritten in place: %q", len(ls), ls)
		}
		for _, l := range ls {
			if summaryRE.MatchString(l) {
				continue // the end, caught before the shell's EXIT= line
			}
			if n := utf8.RuneCountInString(l); n > width {
				t.Fatalf("a %d-column line on a %d-column terminal: %q", n, width, l)
			}
			if !strings.Contains(l, "[") || !strings.Contains(l, "%") {
				t.Fatalf("the progress line has no bar or percentage: %q", l)
			}
			seen[l] = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(seen) < 2 {
		t.Errorf("the progress line was drawn %d distinct times; want it updated in place: %v", len(seen), seen)
	}
	if len(final) != 2 || !summaryRE.MatchString(final[0]) || final[1] != "EXIT=0" {
		t.Fatalf("the screen after the download: %q; want the summary and EXIT=0", final)
	}
	if h := lines(true); len(h) != len(final) {
		t.Errorf("the history holds %d lines, the screen %d: progress lines scrolled away: %q", len(h), len(final), h)
	}
	if fileSHA256(t, filepath.Join(dir, "out.bin")) != p.SHA256() {
		t.Error("wrong bytes")
	}
}

// Without a terminal the summary has the real elapsed time and average
// rate, even for a download that takes milliseconds.
func TestGetSummaryWithoutTerminal(t *testing.T) {
	srv, _ := patternServer(t, 6<<20, 82)
	r := rangefs(t, t.TempDir(), "get", "-o", "out.bin", srv.URL())
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	last := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if l := last[len(last)-1]; !summaryRE.MatchString(l) || strings.Contains(l, " 0 B/s") || strings.Contains(l, "0:00") {
		t.Errorf("summary %q", l)
	}
}
