package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSemanticsNamesRealTests keeps SEMANTICS.md honest: every test it cites
// as proof of a promise must exist in the package it names.
func TestSemanticsNamesRealTests(t *testing.T) {
	doc, err := os.ReadFile("../../SEMANTICS.md")
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]string{"cmd": ".", "fs": "../../fs", "cache": "../../cache", "fetch": "../../fetch"}
	sources := map[string]string{}
	for pkg, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
		var b strings.Builder
		for _, f := range files {
			src, _ := os.ReadFile(f)
			b.Write(src)
		}
		sources[pkg] = b.String()
	}
	cited := regexp.MustCompile("`(cmd|fs|cache|fetch)/((?:Test|Fuzz|Benchmark)[A-Za-z0-9]+)").FindAllStringSubmatch(string(doc), -1)
	if len(cited) < 50 {
		t.Fatalf("SEMANTICS.md cites only %d tests", len(cited))
	}
	for _, m := range cited {
		if !strings.Contains(sources[m[1]], "func "+m[2]+"(") {
			t.Errorf("SEMANTICS.md cites %s/%s, which does not exist", m[1], m[2])
		}
	}
}
