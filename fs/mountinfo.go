package fs

import (
	"os"
	"strconv"
	"strings"
)

// MountEntry is one line of /proc/self/mountinfo (proc(5)), as far as rangefs
// reads it.
type MountEntry struct {
	ID     string // field 1, the mount ID
	Device string // field 3, "major:minor"
	Point  string // field 5, unescaped
	FSType string // the first field after the " - " separator, e.g. "fuse.rangefs"
}

// Mounts reads this process's mount table, in its order (later lines are
// newer mounts). It reads a file of /proc and never touches a mount, so the
// daemon may call it on its own mount point.
func Mounts() ([]MountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var ms []MountEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		m := MountEntry{ID: f[0], Device: f[2], Point: unescapeMountinfo(f[4])}
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				m.FSType = f[i+1]
				break
			}
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes of space, tab, newline
// and backslash (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
