package cache

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Directory rules: which cache roots and directories we use, which files
// in them we open, and the owner file naming the process that holds one.

// prepareDir creates dir (0700) or checks an existing one. A directory that
// is a symlink, not ours, or writable by group/others is refused: whoever can
// write it could swap our files for links to somewhere we would then write.
func prepareDir(dir string, create bool) error {
	fi, err := os.Lstat(dir)
	if create && errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return err
	}
	return checkDir(dir, fi)
}

func checkDir(dir string, fi fs.FileInfo) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("cache dir %s is a symlink; refusing to use it", dir)
	case !fi.IsDir():
		return fmt.Errorf("cache dir %s is not a directory", dir)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("cache dir %s is writable by group or others (mode %v); refusing to use it (chmod 700 it)", dir, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("cache dir %s belongs to uid %d, not to us (uid %d); refusing to use it", dir, st.Uid, os.Getuid())
	}
	return nil
}

// prepareRoot creates the cache root (0700) or checks an existing one,
// following a symlink to it (see Options.Root).
func prepareRoot(root string) error {
	fi, err := os.Stat(root)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return fmt.Errorf("cache root: %w", err)
		}
		fi, err = os.Stat(root)
	}
	if err != nil {
		return fmt.Errorf("cache root: %w", err)
	}
	switch {
	case !fi.IsDir():
		return fmt.Errorf("cache root %s is not a directory", root)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("cache root %s is writable by group or others (mode %v), so another user could swap its caches; refusing to use it: chmod 700 %s, or use another cache directory", root, fi.Mode().Perm(), root)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("cache root %s belongs to uid %d, not to us (uid %d); refusing to use it: use a cache directory of our own", root, st.Uid, os.Getuid())
	}
	return nil
}

// openFileNoFollow opens a regular file without following a symlink at its
// last component, creating it 0600 when flag has O_CREATE. It matches the
// signature of bolt.Options.OpenFile.
func openFileNoFollow(path string, flag int, _ os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, refusedf("%s is a symlink; refusing to follow it", path)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, refusedf("%s is not a regular file", path)
	}
	return f, nil
}

// refuseLink fails when path exists and is not a regular file. Opening with
// O_NOFOLLOW alone would also refuse, but this names the problem plainly and
// keeps a planted link from being mistaken for a corrupt index.
func refuseLink(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return refusedf("%s is a symlink; refusing to follow it", path)
	}
	if !fi.Mode().IsRegular() {
		return refusedf("%s is not a regular file", path)
	}
	return nil
}

// refusedError reports a cache file we will not touch (a symlink, a device).
// It is a safety refusal, never taken for index corruption.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

func refusedf(format string, args ...any) error {
	return &refusedError{msg: fmt.Sprintf(format, args...)}
}

// writeOwner records our PID beside the index we hold locked.
func writeOwner(dir string) error {
	f, err := openFileNoFollow(filepath.Join(dir, ownerName), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readOwner returns the PID in dir/owner, or 0 if it cannot be read.
func readOwner(dir string) int {
	f, err := openFileNoFollow(filepath.Join(dir, ownerName), os.O_RDONLY, 0)
	if err != nil {
		return 0
	}
	defer f.Close()
	buf := make([]byte, 32)
	n, _ := io.ReadFull(f, buf)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
