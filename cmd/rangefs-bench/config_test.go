package main

import (
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.size != 1<<30 || c.capRate != 20_000_000 || c.rtt != 0 || c.randomReads != 200 ||
		c.rangefs != "./bin/rangefs" || c.outDir != "bench-out" || c.seed != 1 || c.fleet != 8 ||
		c.sliceConf != "cmd/rangefs/deploy/nginx-slice-cache.conf" {
		t.Errorf("defaults = %+v", c)
	}

	c, err = parseFlags([]string{"--only", "get,aria2c", "--size", "256MiB", "--cap", "10MB/s", "--rtt", "20ms", "--skip=curl", "--random", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.only, []string{"get", "aria2c"}) || !slices.Equal(c.skip, []string{"curl"}) ||
		c.size != 256<<20 || c.capRate != 10_000_000 || c.rtt != 20*time.Millisecond || c.randomReads != 0 {
		t.Errorf("parsed = %+v", c)
	}

	if c, err := parseFlags([]string{"--cap", "0"}, io.Discard); err != nil || c.capRate != 0 {
		t.Errorf("--cap 0: %+v, %v", c, err)
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, pflag.ErrHelp) {
		t.Errorf("-h: err = %v, want ErrHelp", err)
	}
	for _, args := range [][]string{
		{"--size", "1KiB"}, // below the minimum
		{"--size", "lots"}, // not a size
		{"--cap", "fast"},  // not a rate
		{"--rtt", "-1ms"},  // negative delay
		{"--random", "-1"}, // negative count
		{"--fleet", "-1"},
		{"--fleet", "1000"},
		{"--mount-timeout", "0s"},
		{"--out", ""},
		{"stray"}, // no positional arguments
		{"--no-such-flag"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want an error", args)
		}
	}
}

func TestSelectRows(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	all := buildRows(cfg)
	ids := func(rs []row) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.id)
		}
		return out
	}
	tests := []struct {
		only, skip []string
		want       []string
	}{
		{only: []string{"get", "aria2c-x8"}, want: []string{"get-j1", "get-j4", "get-j8", "get-j16", "aria2c-x8"}},
		{only: []string{"mount-rclone"}, want: []string{"mount-rclone", "mount-rclone-tuned"}},
		{only: []string{"httpdirfs"}, want: []string{"mount-httpdirfs"}},
		{only: []string{"nocap"}, want: []string{"nocap-curl", "nocap-aria2c-x8", "nocap-get-j8", "nocap-mount-rangefs"}},
		{only: []string{"rclone"}, skip: []string{"mount-rclone-tuned"}, want: []string{"rclone-copy", "mount-rclone"}},
		{only: []string{"local"}, want: []string{"local-disk"}},
		{only: []string{"fleet"}, want: []string{"fleet"}},
	}
	for _, tc := range tests {
		got, err := selectRows(all, tc.only, tc.skip)
		if err != nil {
			t.Errorf("only %v skip %v: %v", tc.only, tc.skip, err)
			continue
		}
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("only %v skip %v = %v, want %v", tc.only, tc.skip, ids(got), tc.want)
		}
	}
	if got, err := selectRows(all, nil, nil); err != nil || len(got) != len(all) {
		t.Errorf("no selectors: %d rows, %v; want all %d", len(got), err, len(all))
	}
	if _, err := selectRows(all, []string{"aria"}, nil); err == nil {
		t.Error("a selector matching no row must be an error, not an empty run")
	}
	seen := map[string]bool{}
	for _, r := range all {
		if seen[r.id] {
			t.Errorf("duplicate row id %q", r.id)
		}
		seen[r.id] = true
	}
}

func TestDefaultSuiteEstimateFitsBudget(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var total time.Duration
	for _, r := range buildRows(cfg) {
		if r.est <= 0 {
			t.Errorf("row %s has no estimate", r.id)
		}
		total += r.est
	}
	// The budget is 15 minutes for the default suite; the estimate leaves room for
	// setup (generating and hashing the file).
	if total > 14*time.Minute {
		t.Errorf("default suite estimate %v exceeds the budget", total)
	}
}
