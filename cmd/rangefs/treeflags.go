package main

import (
	"net/url"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// treeConfig holds the mount flags and arguments for trees: directories
// given by URL, S3 buckets and manifests.
type treeConfig struct {
	Manifest     string        // --manifest FILE, "" when none
	DirCacheTime time.Duration // how long a listing is used before a refresh
	S3Endpoint   string        // "" for AWS
	S3Region     string
	S3Anonymous  bool // send unsigned requests to S3 (a public bucket)
	// S3URLs are the s3:// arguments, in order; URLs holds the http(s) ones.
	// Args keeps every URL argument in command-line order.
	S3URLs []string
	Args   []string
}

// treeFlags registers the tree flags on fs and returns the function that
// parses the positional arguments (URL... MOUNTPOINT, where URL may be
// s3://BUCKET/PREFIX/, and may be absent with --manifest) into c.
func treeFlags(fs *pflag.FlagSet, c *mountConfig) func(args []string) error {
	t := &c.treeConfig
	fs.StringVar(&t.Manifest, "manifest", "", "mount the files listed in FILE, one 'PATH<TAB>URL[<TAB>SIZE[<TAB>SHA256]]' a line (no URL argument needed)")
	fs.DurationVar(&t.DirCacheTime, "dir-cache-time", 5*time.Minute, "how long a directory listing is used before it is refreshed in the background (SIGHUP forgets all listings)")
	fs.StringVar(&t.S3Endpoint, "s3-endpoint", "", "endpoint URL of an S3-compatible store for s3:// URLs (default AWS)")
	fs.BoolVar(&t.S3Anonymous, "s3-anonymous", false, "do not sign s3:// requests (a public bucket); without it, credentials come from the AWS environment variables or shared files")
	fs.StringVar(&t.S3Region, "s3-region", "", "region for signing s3:// requests (default $AWS_REGION, else us-east-1)")
	return func(args []string) error {
		if t.DirCacheTime <= 0 {
			return usagef("--dir-cache-time must be positive")
		}
		min := 2
		if t.Manifest != "" {
			min = 1
		}
		if len(args) < min {
			return usagef("mount needs at least one URL (or --manifest FILE) and a mount point; see rangefs mount --help")
		}
		for _, a := range args[:len(args)-1] {
			if strings.HasPrefix(strings.ToLower(a), "s3://") {
				u, err := url.Parse(a)
				if err != nil || u.Host == "" {
					return usagef("bad s3 URL: it must have the form s3://BUCKET/PREFIX/")
				}
				t.S3URLs = append(t.S3URLs, a)
				t.Args = append(t.Args, a)
				continue
			}
			u, err := parseURL(a)
			if err != nil {
				return err
			}
			c.URLs = append(c.URLs, u)
			t.Args = append(t.Args, u)
		}
		c.Mountpoint = args[len(args)-1]
		if t.S3Endpoint != "" {
			if u, err := url.Parse(t.S3Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return usagef("--s3-endpoint must be an http(s) URL")
			}
		}
		return nil
	}
}
