package fs

// Ownership is who the mount's files appear to belong to. The kernel checks
// these modes only with default_permissions (set with AllowOther); without
// it, only the mounting user may enter the mount at all.
type Ownership struct {
	UID, GID uint32 // 0 leaves root (go-fuse fills in nonzero ones)
	Umask    uint32 // permission bits taken off 0o555 (directories) and 0o444 (files)
}

// mode applies the umask to a node's permission bits.
func (o *Ownership) mode(perm uint32) uint32 { return perm &^ (o.Umask & 0o777) }
