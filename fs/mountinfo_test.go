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
