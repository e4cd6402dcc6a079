// Package bytesize is the one parser and formatter of byte counts on the command lines
// of rangefs, rangefs-testserver and rangefs-bench, so that "512K" or "1GB" means the
// same thing to each of them.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// units maps an upper-cased unit to its multiple. K, M, G and T (with or without "i" and
// "B") are powers of 1024, as in curl and aria2c; KB, MB, GB and TB are powers of 1000.
var units = map[string]float64{
	"": 1, "B": 1,
	"K": 1 << 10, "KI": 1 << 10, "KIB": 1 << 10, "KB": 1e3,
	"M": 1 << 20, "MI": 1 << 20, "MIB": 1 << 20, "MB": 1e6,
	"G": 1 << 30, "GI": 1 << 30, "GIB": 1 << 30, "GB": 1e9,
	"T": 1 << 40, "TI": 1 << 40, "TIB": 1 << 40, "TB": 1e12,
}

// Parse reads sizes such as 4096, 512K, 4M, 1GiB, 1.5G, 20MB or "10 MiB" (see units;
// case does not matter). It refuses a negative, fractional-byte or too large (2^62 and
// up) size, an exponent, and an unknown unit, each with an error that names the input.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	v, err := strconv.ParseFloat(num, 64)
	if num == "" || err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a size (try 4096, 512K, 16M, 1GiB)", s)
	}
	mult, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q (use K, M, G, T or KB, MB, GB, TB)", s, unit)
	}
	v *= mult
	if v >= 1<<62 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	return int64(v), nil
}

// Format renders n exactly, in the largest binary unit that divides it ("1GiB", "64KiB",
// "12345"), so that Parse(Format(n)) == n: for labels and report headers.
func Format(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}
