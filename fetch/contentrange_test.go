package fetch

import (
	"testing"
)

func TestParseContentRange(t *testing.T) {
	ok := []struct {
		in                 string
		first, last, total int64
	}{
		{"bytes 0-0/1", 0, 0, 1},
		{"bytes 0-9/10", 0, 9, 10},
		{"bytes 5-9/100", 5, 9, 100},
		{"bytes 1048576-2097151/4194304", 1048576, 2097151, 4194304},
		{"bytes 9223372036854775805-9223372036854775805/9223372036854775806", 9223372036854775805, 9223372036854775805, 9223372036854775806},
	}
	for _, c := range ok {
		f, l, tot, err := ParseContentRange(c.in)
		if err != nil || f != c.first || l != c.last || tot != c.total {
			t.Errorf("ParseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d", c.in, f, l, tot, err, c.first, c.last, c.total)
		}
	}
	bad := []string{
		"",
		"bytes",
		"bytes ",
		"bytes 5-3/10",                   // last < first
		"bytes 0-9/9",                    // total <= last
		"bytes 0-9/0",                    // empty total
		"bytes */10",                     // unsatisfied form
		"bytes 0-9/*",                    // unknown total
		"bytes +1-9/10",                  // sign
		"bytes 0-+9/10",                  // sign
		"bytes -1-9/10",                  // negative
		"bytes 0--9/10",                  // negative
		"bytes 01-9/10",                  // leading zero
		"bytes 0-9/010",                  // leading zero
		"Bytes 0-9/10",                   // unit case
		"bytes=0-9/10",                   // request syntax
		" bytes 0-9/10",                  // leading space
		"bytes 0-9/10 ",                  // trailing space
		"bytes  0-9/10",                  // double space
		"bytes 0 -9/10",                  // inner space
		"bytes 0-9",                      // no total
		"bytes 0-9/10/11",                // junk
		"bytes 0-9,10-19/20",             // two ranges
		"bytes 0-9/10x",                  // junk
		"items 0-9/10",                   // other unit
		"bytes 0x0-9/10",                 // hex
		"bytes 0-99999999999999999999/1", // overflow
		"bytes 0-1/99999999999999999999", // overflow
		"bytes 0-1/9223372036854775807",  // MaxInt64 refused (last+1 overflows in callers)
		"bytes 9223372036854775806-9223372036854775807/1", // overflow
		"bytes ٣-٤/٥", // non-ASCII digits
	}
	for _, in := range bad {
		if f, l, tot, err := ParseContentRange(in); err == nil {
			t.Errorf("ParseContentRange(%q) = %d, %d, %d, nil; want an error", in, f, l, tot)
		}
	}
}

// FuzzParseContentRange: never panics, and whatever it accepts is a valid range that formats
// back to exactly the input (so no odd spelling is ever silently reinterpreted).
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{
		"bytes 0-0/1", "bytes 0-9/10", "bytes 5-3/10", "bytes */10", "bytes +1-2/3",
		"bytes 0-99999999999999999999/1", "bytes 01-2/3", "bytes 0-1/*", "", "bytes 1-2/3 ",
		"bytes 9223372036854775805-9223372036854775805/9223372036854775806",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, err := ParseContentRange(s)
		if err != nil {
			return
		}
		if first < 0 || first > last || last >= total {
			t.Fatalf("ParseContentRange(%q) accepted an invalid range %d-%d/%d", s, first, last, total)
		}
		if back := formatContentRange(first, last, total); back != s {
			t.Fatalf("ParseContentRange(%q) accepted a non-canonical form (canonical %q)", s, back)
		}
	})
}
