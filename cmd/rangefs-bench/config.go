package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"rangefs/cmd/internal/bytesize"
)

// config is everything the command line decides. parseFlags fills it and never exits,
// so the parser is table-tested.
type config struct {
	rangefs      string        // path of the rangefs binary under test
	size         int64         // bytes of the generated test file
	capRate      int64         // bytes/s per TCP connection through the proxy; 0 = no cap
	rtt          time.Duration // round-trip delay the proxy adds; 0 = none
	only, skip   []string      // row selectors (see selected)
	outDir       string        // where the CSV and SVG go
	workDir      string        // "" = a fresh temp dir removed at exit
	keep         bool          // keep the work dir (and its generated file) after the run
	randomReads  int           // random 4 KiB reads per mount phase; 0 = skip random phases
	seed         uint64        // seeds the file content and the random offsets
	mountTimeout time.Duration // how long a mount may take to show its file
	rcloneTuned  []string      // extra rclone mount flags of the tuned row
	fleet        int           // mounts of the fleet row; 0 = no fleet row
	sliceConf    string        // the shipped nginx slice-cache config the fleet row runs
	list         bool          // print the selected rows and the time estimate, run nothing
	verbose      bool          // log every command line
}

// parseFlags parses args (without the program name). It returns pflag.ErrHelp after
// printing usage for -h, and an error naming the bad flag otherwise.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fl := pflag.NewFlagSet("rangefs-bench", pflag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprintf(stderr, "usage: rangefs-bench [flags]\n\n"+
			"Runs rangefs and its peers (aria2c, axel, curl, rclone, httpdirfs) against a private nginx\n"+
			"behind a per-connection pacing proxy; prints a markdown table and writes CSV and SVG.\n\n")
		fl.PrintDefaults()
	}
	size := fl.String("size", "1GiB", "test file size (K/M/G and KiB/MiB/GiB are binary, KB/MB/GB decimal)")
	capRate := fl.String("cap", "20MB", "rate cap per TCP connection, bytes per second (MB = 10^6); 0 = none")
	fl.StringVar(&c.rangefs, "rangefs", "./bin/rangefs", "rangefs binary under test")
	fl.DurationVar(&c.rtt, "rtt", 0, "round-trip delay added by the proxy, e.g. 20ms")
	fl.StringSliceVar(&c.only, "only", nil, "run only these rows: ids or id prefixes, comma separated (see --list)")
	fl.StringSliceVar(&c.skip, "skip", nil, "skip these rows: ids or id prefixes")
	fl.StringVar(&c.outDir, "out", "bench-out", "directory for results.csv, results.md and bench.svg")
	fl.StringVar(&c.workDir, "work", "", "work directory (default: a new temp dir, removed at exit)")
	fl.BoolVar(&c.keep, "keep", false, "keep the work directory")
	fl.IntVar(&c.randomReads, "random", 200, "random 4 KiB reads per mount phase (0 = no random-read rows)")
	fl.Uint64Var(&c.seed, "seed", 1, "seed of the file content and the random read offsets")
	fl.DurationVar(&c.mountTimeout, "mount-timeout", 30*time.Second, "max wait for a mount to show its file")
	tuned := fl.String("rclone-tuned", strings.Join(rcloneTunedDefault, " "), "extra rclone mount flags of the mount-rclone-tuned row")
	fl.IntVar(&c.fleet, "fleet", 8, "rangefs mounts reading the file at once through the nginx slice cache (fleet row; 0 = no fleet row)")
	fl.StringVar(&c.sliceConf, "slice-conf", "cmd/rangefs/deploy/nginx-slice-cache.conf", "the shipped nginx slice-cache config the fleet row runs")
	fl.BoolVar(&c.list, "list", false, "list the selected rows with a time estimate and exit")
	fl.BoolVarP(&c.verbose, "verbose", "v", false, "log every command line")
	if err := fl.Parse(args); err != nil {
		return c, err
	}
	if fl.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	c.rcloneTuned = strings.Fields(*tuned)
	var err error
	if c.size, err = bytesize.Parse(*size); err != nil {
		return c, fmt.Errorf("--size: %w", err)
	}
	if c.size < 64<<10 {
		return c, fmt.Errorf("--size: %d bytes is below the 64 KiB minimum", c.size)
	}
	if c.capRate, err = bytesize.Parse(strings.TrimSuffix(*capRate, "/s")); err != nil {
		return c, fmt.Errorf("--cap: %w", err)
	}
	if c.rtt < 0 || c.rtt > 10*time.Second {
		return c, fmt.Errorf("--rtt: %v is outside 0..10s", c.rtt)
	}
	if c.randomReads < 0 || c.randomReads > 100000 {
		return c, fmt.Errorf("--random: %d is outside 0..100000", c.randomReads)
	}
	if c.fleet < 0 || c.fleet > 64 {
		return c, fmt.Errorf("--fleet: %d is outside 0..64", c.fleet)
	}
	if c.mountTimeout <= 0 {
		return c, errors.New("--mount-timeout must be positive")
	}
	if c.outDir == "" {
		return c, errors.New("--out must not be empty")
	}
	return c, nil
}

// formatRate renders a per-connection cap for labels ("20 MB/s", "no cap").
func formatRate(r int64) string {
	if r <= 0 {
		return "no cap"
	}
	return strconv.FormatFloat(float64(r)/1e6, 'f', -1, 64) + " MB/s"
}
