package fs

import (
	"os"
	"strconv"
	"strings"
)

// MountEntry is one line of /proc/self/mountinfo (proc(5)), as far as rangefs
// reads it.
type MountEntry struct {
	ID        string // field 1, the mount ID
	Device    string // field 3, "major:minor"
	Point     string // field 5, unescaped
	Options   string // field 6, the per-mount options ("ro,nosuid,...")
	FSType    string // the first field after the " - " separator, e.g. "fuse.rangefs"
	SuperOpts string // the third field after the separator, the file system's own options
}

// Mounts reads this process's mount table, in its order (later lines are
// newer mounts). It reads a file of /proc and never touches a mount, so the
// daemon may call it on its own mount point.
func Mounts() ([]MountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return ParseMounts(string(b)), nil
}

// ParseMounts reads a mount table in the format of /proc/PID/mountinfo,
// skipping lines too short to name a mount point.
func ParseMounts(info string) []MountEntry {
	var ms []MountEntry
	for _, line := range strings.Split(info, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		m := MountEntry{ID: f[0], Device: f[2], Point: unescapeMountinfo(f[4])}
		if len(f) > 5 {
			m.Options = f[5]
		}
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				m.FSType = f[i+1]
				if i+3 < len(f) {
					m.SuperOpts = f[i+3]
				}
				break
			}
		}
		ms = append(ms, m)
	}
	return ms
}

// MountedAt returns the newest mount whose point is dir (already absolute and
// clean), and whether there is one.
func MountedAt(dir string) (MountEntry, bool) {
	ms, err := Mounts()
	if err != nil {
		return MountEntry{}, false
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Point == dir {
			return ms[i], true
		}
	}
	return MountEntry{}, false
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
