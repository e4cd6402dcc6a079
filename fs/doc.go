// Package fs shows a tree of remote files as a read-only FUSE file system.
// It is a thin adapter: the caller describes the tree through the node
// interface of tree.go (Dir, File, Symlink, and the Reader of an open
// file), and fs never learns where bytes come from; it imports cache only
// for CacheFile, the node of one open cache.File. Errors become statuses in
// one place (errno.go).
//
// # The tree
//
//   - A directory is a dirState (dir.go): its current listing, the inode
//     numbers of its entries, and the state of each name the kernel looked
//     up (a child). A dirNode is the go-fuse inode over it; the listing
//     outlives the kernel forgetting the inode.
//   - Listing: the first lookup or readdir calls Dir.List and waits for it
//     (one listing at a time per directory; at most maxListings in the
//     whole mount). A listing older than Options.DirCacheTime is refreshed
//     in the background at the next access, which the old listing answers.
//     Server.Forget (SIGHUP) lists every known directory again and makes
//     accesses wait for the new listings.
//   - A refresh keeps the child of a name whose node is unchanged (a
//     directory stays a directory, a file keeps its Version): its inode,
//     open handles and state stay. A changed or new name gets a new inode
//     number, so new opens see the new version while handles on the old
//     inode keep theirs. The kernel is told which names changed
//     (NotifyEntry), always after the listing's waiters are answered: the
//     kernel handles the notification under the directory's lock, which a
//     readdir waiting for the listing holds.
//   - Lookups never wait for a file: a File whose size is a hint (Attr not
//     Exact) is shown with no attribute caching, and the next stat calls
//     File.Stat, which may probe.
//
// # Files and handles
//
//   - A fileState is what the inodes and handles of one file version
//     share: the open modes (openmode.go, the kernel's one-I/O-mode-per-
//     inode rule for passthrough), the spans whose reads just timed out
//     (failures.go), and the Version of the last open, so that an open of
//     another version drops the kernel's cached pages instead of keeping
//     them (FOPEN_KEEP_CACHE only while the version is unchanged).
//   - A handle reads through its own Reader, each read bounded by
//     Options.OpTimeout and ended early by an interrupt after a grace
//     (node.go).
//
// # Locks
//
//   - tree.mu protects tree.listed. Taken after a dirState.mu, never before.
//   - dirState.mu protects the listing, its inode numbers, the children
//     and the listing state (listed, forgot, listing, lastErr).
//   - openModes.mu protects a file's handle counts; recentFailures.mu its
//     failed spans.
//
// No lock is held while a node may wait (List, Stat, Open, a read) or
// while the kernel is notified; Attr and Version, which answer from memory,
// are called under dirState.mu when a listing is installed.
package fs
