package fetchtest

import "rangefs/fetch/fetchtest/content"

// PatternReader is the content a test server serves by default: see package content,
// which holds the one generator. The names here save server tests a second import.
type PatternReader = content.Reader

// Pattern returns the content of size bytes for seed (content.New).
func Pattern(size int64, seed uint64) *PatternReader { return content.New(size, seed) }

// PatternSHA256 is the hex sha256 of Pattern(size, seed) (content.SHA256).
func PatternSHA256(size int64, seed uint64) string { return content.SHA256(size, seed) }
