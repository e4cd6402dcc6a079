package main

import (
	"errors"
	"io"
	"slices"
	"testing"
	"time"
)

func TestParseMountTrees(t *testing.T) {
	c, err := parseMount([]string{"--manifest", "files.tsv", "--dir-cache-time", "1m", "mnt"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Manifest != "files.tsv" || c.Mountpoint != "mnt" || len(c.Args) != 0 || c.DirCacheTime != time.Minute {
		t.Errorf("--manifest without a URL: %+v", c.treeConfig)
	}
	c, err = parseMount([]string{"--s3-endpoint", "http://127.0.0.1:9000", "--s3-anonymous", "http://h/dir/", "s3://bkt/pre/", "http://h/f", "mnt"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Args, []string{"http://h/dir/", "s3://bkt/pre/", "http://h/f"}) ||
		!slices.Equal(c.URLs, []string{"http://h/dir/", "http://h/f"}) || !slices.Equal(c.S3URLs, []string{"s3://bkt/pre/"}) ||
		!c.S3Anonymous || c.DirCacheTime != 5*time.Minute {
		t.Errorf("mixed arguments: URLs %q, S3 %q, args %q, %+v", c.URLs, c.S3URLs, c.Args, c.treeConfig)
	}
	for _, args := range [][]string{
		{"--manifest", "f.tsv"},
		{"s3://", "mnt"},
		{"--dir-cache-time", "0s", "http://h/a", "m"},
		{"--s3-endpoint", "ftp://h", "s3://b/", "m"},
	} {
		_, err := parseMount(args, noEnv, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseMount(%q) = %v, want a usage error", args, err)
		}
	}
}

func TestDirName(t *testing.T) {
	for in, want := range map[string]string{
		"http://h/a/b/":            "b",
		"http://h/a/caf%C3%A9/":    "café",
		"http://h/":                "h",
		"http://user:pw@h:8080/":   "h",
		"s3://bucket/":             "bucket",
		"s3://bucket/data/images/": "images",
		"http://h/..%2f/":          "h",
	} {
		if got := dirName(in); got != want {
			t.Errorf("dirName(%q) = %q, want %q", in, got, want)
		}
	}
}
