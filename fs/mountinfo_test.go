package fs

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:           "/plain",
		`/a\040b`:          "/a b",
		`/tab\011x\134y`:   "/tab\tx\\y",
		`/trailing\`:       `/trailing\`,
		`/not\9999escaped`: `/not\9999escaped`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// ParseMounts reads every field rangefs uses, with the escapes undone.
func TestParseMounts(t *testing.T) {
	info := `22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
88 22 0:45 / /tmp/bench/mnt/a\040b rw,nosuid,nodev - fuse.rangefs rangefs rw,user_id=0,default_permissions
89 22 0:46 / /tmp/back\134slash rw - fuse httpdirfs rw
short line
`
	want := []MountEntry{
		{ID: "22", Device: "253:0", Point: "/", Options: "rw,relatime", FSType: "ext4", SuperOpts: "rw"},
		{ID: "88", Device: "0:45", Point: "/tmp/bench/mnt/a b", Options: "rw,nosuid,nodev", FSType: "fuse.rangefs", SuperOpts: "rw,user_id=0,default_permissions"},
		{ID: "89", Device: "0:46", Point: `/tmp/back\slash`, Options: "rw", FSType: "fuse", SuperOpts: "rw"},
	}
	got := ParseMounts(info)
	if len(got) != len(want) {
		t.Fatalf("ParseMounts: %d entries %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// Mounts finds a real mount whose point needs unescaping (a space).
func TestMountsListsEscapedPoint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "with space")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("skipping: cannot mount a tmpfs here: %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	ms, err := Mounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Point == dir {
			if m.FSType != "tmpfs" || m.Device == "" || m.ID == "" {
				t.Fatalf("mount at %q read as %+v", dir, m)
			}
			if !isMountPoint(dir) || mountDevice(dir) != m.Device {
				t.Fatalf("isMountPoint/mountDevice disagree with Mounts for %q", dir)
			}
			return
		}
	}
	t.Fatalf("Mounts did not list the tmpfs at %q", dir)
}
