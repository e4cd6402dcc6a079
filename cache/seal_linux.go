//go:build linux

package cache

import (
	"io/fs"
	"syscall"
)

// fileID returns the identity a seal records of the data file.
func fileID(fi fs.FileInfo) (sealID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return sealID{}, false
	}
	return sealID{ino: st.Ino, size: st.Size, mtimeNs: st.Mtim.Nano(), ctimeNs: st.Ctim.Nano()}, true
}
