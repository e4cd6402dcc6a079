package bytesize

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"4096", 4096, false},
		{"0", 0, false},
		{"512K", 512 << 10, false},
		{"512k", 512 << 10, false},
		{"4M", 4 << 20, false},
		{"1GiB", 1 << 30, false},
		{"1.5G", 3 << 29, false},
		{"2MB", 2e6, false},
		{"10 MiB", 10 << 20, false},
		{" 4m ", 4 << 20, false},
		{"0.5MiB", 512 << 10, false},
		{"1.5GB", 1_500_000_000, false},
		{"1T", 1 << 40, false},
		{"64mb", 64e6, false}, // KB and up are decimal everywhere (rangefs-testserver read them as binary)
		{"", 0, true},
		{"M", 0, true},
		{"-1", 0, true},
		{"-1MB", 0, true},
		{"1X", 0, true},
		{"12XB", 0, true},
		{"abc", 0, true},
		{"1.2.3", 0, true},
		{"1e3", 0, true},  // no exponents
		{"1.5", 0, true},  // not whole bytes
		{"1.3K", 0, true}, // 1331.2 bytes
		{"9999999T", 0, true},
		{"99999999TB", 0, true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("Parse(%q) = %d, %v; want %d, bad=%v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestFormatRoundTrips(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0", 1000: "1000", 1 << 10: "1KiB", 3 << 19: "1536KiB", 64 << 20: "64MiB", 1 << 30: "1GiB", 12345: "12345",
	} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
		if back, err := Parse(Format(n)); err != nil || back != n {
			t.Errorf("Parse(Format(%d)) = %d, %v", n, back, err)
		}
	}
}
