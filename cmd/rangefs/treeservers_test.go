package main

// The content of the tree the tree tests serve (through the nginx and
// python3 http.server of package listingtest).

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// treeFile is one file of a test tree: its slash path below the root.
type testTreeFile struct {
	path   string
	size   int64
	sha256 string
}

// fileContent is the deterministic content of a test tree file.
func fileContent(path string, size int64) []byte {
	b := make([]byte, size)
	h := sha256.Sum256([]byte(path))
	for i := range b {
		b[i] = h[i%len(h)] ^ byte(i>>8)
	}
	return b
}

// makeTestTree writes three levels of 1,000 files (d0..d9/e0..e9/f0..f9.bin,
// 0 to 9 KiB) and a flat directory of flat files under a new directory, and
// returns the root and every file.
func makeTestTree(t testing.TB, flat int) (string, []testTreeFile) {
	t.Helper()
	root := t.TempDir()
	var files []testTreeFile
	write := func(rel string, size int64) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := fileContent(rel, size)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		files = append(files, testTreeFile{rel, size, hex.EncodeToString(sum[:])})
	}
	n := 0
	for d := range 10 {
		for e := range 10 {
			for f := range 10 {
				write(fmt.Sprintf("d%d/e%d/f%d.bin", d, e, f), int64(n*97%9000))
				n++
			}
		}
	}
	for i := range flat {
		write(fmt.Sprintf("flat/%04d.dat", i), int64(i%300))
	}
	return root, files
}
