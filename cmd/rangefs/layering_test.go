package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportArrows enforces the package arrows of the design:
//
//	cmd/rangefs -> fs, cache, fetch, fetch/listing, cmd/internal, pflag
//	fs          -> fs/archive, cache, go-fuse  (never fetch, never bbolt)
//	fs/archive  -> stdlib only
//	cache       -> bbolt, stdlib           (never fetch)
//	fetch/listing -> fetch, x/net/html, the AWS SigV4 signer and its credentials
//	                 (never cache, never fs)
//	fetch       -> stdlib only
//
// It lists every non-test dependency with `go list -deps`. The tests of cache and fs
// keep the same arrows: of this module they import only what their package may, and the
// stdlib-only test helpers listed in testHelpers.
func TestImportArrows(t *testing.T) {
	allowed := map[string][]string{
		"rangefs/fetch":                    {},
		"rangefs/fetch/fetchtest/content":  {},
		"rangefs/fetch/fetchtest/testsync": {},
		"rangefs/cache/cachetest":          {"rangefs/fetch/fetchtest/content"},
		"rangefs/cmd/internal/bytesize":    {},
		"rangefs/fetch/listing": {"rangefs/fetch", "golang.org/x/net/html",
			"github.com/aws/aws-sdk-go-v2", "github.com/aws/smithy-go"},
		"rangefs/fs/archive": {},
		"rangefs/cache":      {"go.etcd.io/bbolt", "golang.org/x/sys"},
		"rangefs/fs":         {"rangefs/fs/archive", "rangefs/cache", "github.com/hanwen/go-fuse/v2", "go.etcd.io/bbolt", "golang.org/x/sys"},
		"rangefs/cmd/rangefs": {"rangefs/fs", "rangefs/cache", "rangefs/fetch", "github.com/hanwen/go-fuse/v2", "github.com/spf13/pflag", "go.etcd.io/bbolt", "golang.org/x/sys",
			// The client libraries of the CLI (issue 14): cobra with its man page
			// generator, mpb and x/term for progress, go-systemd, client_golang.
			"github.com/spf13/cobra", "github.com/cpuguy83/go-md2man", "github.com/russross/blackfriday", "go.yaml.in/yaml",
			"github.com/inconshreveable/mousetrap",
			"github.com/vbauerster/mpb", "github.com/VividCortex/ewma", "github.com/acarl005/stripansi", "github.com/mattn/go-runewidth",
			"github.com/clipperhouse/uax29", "github.com/vbauerster/cupwriter", "golang.org/x/term",
			"github.com/coreos/go-systemd",
			"github.com/prometheus/", "github.com/beorn7/perks", "github.com/cespare/xxhash", "github.com/munnerz/goautoneg",
			"google.golang.org/protobuf", "go.yaml.in/yaml", "github.com/klauspost/compress", "github.com/pandatix/go-abnf",
			// The command-line helpers its sibling commands share (bytesize).
			"rangefs/cmd/internal",
			// fetch/listing (trees) and what it brings.
			"golang.org/x/net/html", "github.com/aws/aws-sdk-go-v2", "github.com/aws/smithy-go"},
	}
	// fs reaches bbolt and x/sys only through cache; it must not import them itself.
	direct := map[string][]string{
		"rangefs/fs":            {"rangefs/fetch", "go.etcd.io/bbolt"},
		"rangefs/fetch/listing": {"rangefs/cache", "rangefs/fs"},
	}
	for pkg, ok := range allowed {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == pkg || hasPrefixIn(dep, ok) {
				continue
			}
			t.Errorf("%s depends on %s, which the design does not allow", pkg, dep)
		}
	}
	for pkg, ok := range map[string][]string{
		"rangefs/cache": testHelpers,
		"rangefs/fs":    append([]string{"rangefs/fs/archive", "rangefs/cache"}, testHelpers...),
	} {
		out, err := exec.Command("go", "list", "-f", "{{join .TestImports \" \"}} {{join .XTestImports \" \"}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, imp := range strings.Fields(string(out)) {
			if strings.HasPrefix(imp, "rangefs/") && imp != pkg && !hasPrefixIn(imp, ok) {
				t.Errorf("the tests of %s import %s, which the design does not allow", pkg, imp)
			}
		}
	}
	for pkg, banned := range direct {
		out, err := exec.Command("go", "list", "-f", "{{join .Imports \" \"}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, imp := range strings.Fields(string(out)) {
			if hasPrefixIn(imp, banned) {
				t.Errorf("%s imports %s directly", pkg, imp)
			}
		}
	}
}

// testHelpers are the packages every layer's tests may import: each imports the standard
// library and the other test helpers only (TestImportArrows checks that too).
var testHelpers = []string{"rangefs/fetch/fetchtest/content", "rangefs/fetch/fetchtest/testsync", "rangefs/cache/cachetest"}

func hasPrefixIn(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if path == p || strings.HasPrefix(path, p+"/") || strings.HasSuffix(p, "/") && strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}
