package fetch

import (
	"errors"
	"math"
	"strconv"
)

var errContentRange = errors.New("malformed Content-Range")

// ParseContentRange parses a Content-Range value of the single canonical form
// "bytes FIRST-LAST/TOTAL" (RFC 9110 §14.4) with 0 <= FIRST <= LAST < TOTAL.
// It rejects the unsatisfied form ("bytes */T"), an unknown total ("/*"), signs, spaces,
// leading zeros, overflow and trailing junk: a value we accept is exactly the string
// fmt.Sprintf("bytes %d-%d/%d", first, last, total). Being strict costs nothing with real
// servers and turns every odd answer into ErrBadRange instead of a misplaced write.
func ParseContentRange(s string) (first, last, total int64, err error) {
	const prefix = "bytes "
	if len(s) < len(prefix) || s[:len(prefix)] != prefix {
		return 0, 0, 0, errContentRange
	}
	rest := s[len(prefix):]
	first, rest, ok := parseDecimal(rest)
	if !ok || len(rest) == 0 || rest[0] != '-' {
		return 0, 0, 0, errContentRange
	}
	last, rest, ok = parseDecimal(rest[1:])
	if !ok || len(rest) == 0 || rest[0] != '/' {
		return 0, 0, 0, errContentRange
	}
	total, rest, ok = parseDecimal(rest[1:])
	if !ok || rest != "" {
		return 0, 0, 0, errContentRange
	}
	if last < first || total <= last {
		return 0, 0, 0, errContentRange
	}
	return first, last, total, nil
}

// parseDecimal reads a non-negative canonical decimal (no sign, no leading zero unless "0")
// from the front of s and returns the value and what follows it.
func parseDecimal(s string) (v int64, rest string, ok bool) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 || (i > 1 && s[0] == '0') {
		return 0, s, false
	}
	v, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || v < 0 || v == math.MaxInt64 {
		// MaxInt64 is refused so that last+1 and first+n never overflow in callers.
		return 0, s, false
	}
	return v, s[i:], true
}

// maxObjectSize is the largest size an Object may have: its Content-Range total must be
// below math.MaxInt64 (which ParseContentRange refuses so that last+1 cannot overflow).
const maxObjectSize = math.MaxInt64 - 1

// formatContentRange is the canonical form ParseContentRange accepts.
func formatContentRange(first, last, total int64) string {
	return "bytes " + strconv.FormatInt(first, 10) + "-" + strconv.FormatInt(last, 10) + "/" + strconv.FormatInt(total, 10)
}
