package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// countFS is a small read-only FUSE file system inside the driver that shows local files
// and counts the bytes programs read from them. Its files are opened with direct I/O, so
// the kernel neither reads ahead nor caches: every read(2) of the program arrives as
// READs of exactly its range, and the count is what the program itself read. (A program
// that mmaps its file would fail on it; none of the client rows does.)
type countFS struct {
	dir    string
	server *fuse.Server
	files  map[string]*countFile
}

// countFile is one shown file.
type countFile struct {
	gofs.Inode
	path string
	size int64
	read atomic.Int64 // bytes returned to READs
}

type countRoot struct {
	gofs.Inode
	files map[string]*countFile
}

var _ = (gofs.NodeOnAdder)((*countRoot)(nil))

func (r *countRoot) OnAdd(ctx context.Context) {
	for name, f := range r.files {
		r.AddChild(name, r.NewPersistentInode(ctx, f, gofs.StableAttr{}), true)
	}
}

var (
	_ = (gofs.NodeGetattrer)((*countFile)(nil))
	_ = (gofs.NodeOpener)((*countFile)(nil))
	_ = (gofs.NodeReader)((*countFile)(nil))
)

func (f *countFile) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = uint64(f.size)
	return 0
}

// countHandle is an open file: its own descriptor of the local file.
type countHandle struct{ f *os.File }

var _ = (gofs.FileReleaser)((*countHandle)(nil))

func (h *countHandle) Release(context.Context) syscall.Errno {
	h.f.Close()
	return 0
}

func (f *countFile) Open(_ context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	h, err := os.Open(f.path)
	if err != nil {
		return nil, 0, gofs.ToErrno(err)
	}
	return &countHandle{f: h}, fuse.FOPEN_DIRECT_IO, 0
}

func (f *countFile) Read(_ context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*countHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	n, err := h.f.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, gofs.ToErrno(err)
	}
	f.read.Add(int64(n))
	return fuse.ReadResultData(dest[:n]), 0
}

// mountCountFS shows files (name -> local path) in the empty directory dir. The caller
// must close it.
func mountCountFS(dir string, files map[string]string) (*countFS, error) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("no /dev/fuse: %w", err)
	}
	c := &countFS{dir: dir, files: map[string]*countFile{}}
	for name, p := range files {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		c.files[name] = &countFile{path: p, size: fi.Size()}
	}
	sec := time.Second
	srv, err := gofs.Mount(dir, &countRoot{files: c.files}, &gofs.Options{
		EntryTimeout: &sec, AttrTimeout: &sec,
		MountOptions: fuse.MountOptions{FsName: "rangefs-bench-count", Name: "rangefs-bench", DisableXAttrs: true},
	})
	if err != nil {
		return nil, err
	}
	c.server = srv
	return c, nil
}

// path is where name shows in the mount.
func (c *countFS) path(name string) string { return filepath.Join(c.dir, name) }

// reset zeroes every file's count.
func (c *countFS) reset() {
	for _, f := range c.files {
		f.read.Store(0)
	}
}

// readBytes is what programs read from name since the last reset.
func (c *countFS) readBytes(name string) int64 {
	if f, ok := c.files[name]; ok {
		return f.read.Load()
	}
	return 0
}

// close unmounts, bounded: a lazy unmount when the kernel still holds it after 5 s.
func (c *countFS) close() {
	if c == nil || c.server == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		c.server.Unmount()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Unmount(c.dir, syscall.MNT_DETACH)
	}
}
