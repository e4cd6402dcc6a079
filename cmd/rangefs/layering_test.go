package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportArrows enforces the package arrows of the design:
//
//	cmd/rangefs -> fs, cache, fetch, pflag
//	fs          -> fs/archive, cache, go-fuse  (never fetch, never bbolt)
//	fs/archive  -> stdlib only
//	cache       -> bbolt, stdlib           (never fetch)
//	fetch/listing -> fetch, x/net/html, the AWS SigV4 signer and its credentials
//	                 (never cache, never fs)
//	fetch       -> stdlib only
//
// It lists every non-test dependency with `go list -deps`.
func TestImportArrows(t *testing.T) {
	allowed := map[string][]string{
		"rangefs/fetch": {},
		"rangefs/fetch/listing": {"rangefs/fetch", "golang.org/x/net/html",
			"github.com/aws/aws-sdk-go-v2", "github.com/aws/smithy-go"},
		"rangefs/fs/archive":  {},
		"rangefs/cache":       {"go.etcd.io/bbolt", "golang.org/x/sys"},
		"rangefs/fs":          {"rangefs/fs/archive", "rangefs/cache", "github.com/hanwen/go-fuse/v2", "go.etcd.io/bbolt", "golang.org/x/sys"},
		"rangefs/cmd/rangefs": {"rangefs/fs", "rangefs/cache", "rangefs/fetch", "github.com/hanwen/go-fuse/v2", "github.com/spf13/pflag", "go.etcd.io/bbolt", "golang.org/x/sys"},
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

func hasPrefixIn(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}
