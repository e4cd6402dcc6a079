package listing

import (
	"strconv"
	"strings"
	"time"
)

// dateLayouts are the date-and-time forms index pages print after a link, as two fields:
// nginx "12-Jan-2024 10:00", Apache "2024-01-12 10:00", lighttpd "2024-Jan-12 10:00:00".
var dateLayouts = []string{
	"02-Jan-2006 15:04",
	"02-Jan-2006 15:04:05",
	"2006-01-02 15:04",
	"2006-01-02 15:04:05",
	"2006-Jan-02 15:04:05",
	"2006-Jan-02 15:04",
}

// parseHints finds a size and a modification time in the text that follows a link. The
// size is a hint only: "12M" is anything from 11.5 to 12.5 MiB, and even "1234" may be
// rounded by a template. -1 when the text holds none; a zero time when none.
func parseHints(text string) (size int64, mtime time.Time) {
	size = -1
	f := strings.Fields(text)
	for i := 0; i < len(f); i++ {
		if i+1 < len(f) && mtime.IsZero() {
			if t, ok := parseDate(f[i] + " " + f[i+1]); ok {
				mtime = t
				i++
				continue
			}
		}
		unit := ""
		if i+1 < len(f) {
			unit = f[i+1]
		}
		if n, usedUnit, ok := parseSizeHint(f[i], unit); ok && size < 0 {
			size = n // the first size-like field: later columns are types or descriptions
			if usedUnit {
				i++
			}
		}
	}
	return size, mtime
}

func parseDate(s string) (time.Time, bool) {
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// parseSizeHint reads "1234", "12M", "1.2K", "4.0k", "1.2 KiB", "12 MB", "512 B". unit is
// the next field, used when it is a bare unit ("KiB"); usedUnit says it was consumed.
// Multiples are binary, as nginx, Apache and lighttpd compute them.
func parseSizeHint(num, unit string) (n int64, usedUnit bool, ok bool) {
	i := 0
	for i < len(num) && (num[i] >= '0' && num[i] <= '9' || num[i] == '.') {
		i++
	}
	if i == 0 {
		return 0, false, false
	}
	v, err := strconv.ParseFloat(num[:i], 64)
	if err != nil || v < 0 {
		return 0, false, false
	}
	suffix := num[i:]
	if suffix == "" {
		if m, ok := unitMultiple(unit); ok && unit != "" {
			return scale(v, m)
		}
		if strings.Contains(num, ".") {
			return 0, false, false // a bare fraction is no size
		}
		n, err := strconv.ParseInt(num, 10, 64) // exact digits stay exact
		return n, false, err == nil
	}
	m, ok := unitMultiple(suffix)
	if !ok {
		return 0, false, false
	}
	n, _, ok = scale(v, m)
	return n, false, ok
}

func scale(v float64, m int64) (int64, bool, bool) {
	f := v * float64(m)
	if f >= 1<<62 {
		return 0, false, false
	}
	return int64(f + 0.5), true, true
}

// unitMultiple maps "", "B", "K", "KB", "KiB", "k", "M", … to its binary multiple.
func unitMultiple(u string) (int64, bool) {
	u = strings.ToUpper(u)
	u = strings.TrimSuffix(u, "B")
	u = strings.TrimSuffix(u, "I")
	if u == "" || u == "BYTES" || u == "BYTE" {
		return 1, true
	}
	i := strings.IndexByte("KMGTPE", u[0])
	if len(u) != 1 || i < 0 {
		return 0, false
	}
	return 1 << (10 * (i + 1)), true
}
