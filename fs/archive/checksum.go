package archive

// CRC32 reports the CRC-32 the archive records for a zip member's
// decompressed bytes; ok is false when it records none (tar members,
// directories). A caller serving a stored member through Span checks it
// the way a Reader would: over a read from the start to the end in order.
func (e *Entry) CRC32() (crc uint32, ok bool) { return e.data.crc, e.data.hasCRC }
