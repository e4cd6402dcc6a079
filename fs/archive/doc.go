// Package archive reads zip, tar and tar.gz archives in place: an
// io.ReaderAt over the archive goes in, a listing and per-member readers
// come out. It knows nothing of FUSE, HTTP or the chunk cache; the caller
// hands it a ReaderAt (in rangefs, a cache reader) and serves what it
// returns. It imports only the standard library.
//
// # Opening
//
//   - OpenZip reads the archive's last 64 KiB and a little (end record,
//     zip64 locator and record, in one read), then the central directory in
//     one more read when the tail did not hold it. Members are untouched
//     until opened; opening one reads its local header (about 100 bytes)
//     once.
//   - OpenTar hops from header to header: one read of 1 KiB per member at
//     an offset computed from the previous header (two with a pax or GNU
//     long-name header); member data is never read. archive/tar decodes the
//     headers (ustar, pax, GNU, long names, sparse maps).
//   - IndexTarGz makes one sequential pass that inflates the whole archive,
//     lists each member once its data has gone by, and keeps a checkpoint
//     every Limits.CheckpointSpan of output at a deflate block boundary:
//     input byte and bit, output offset, the gzip member's CRC so far and
//     the 32 KiB of output before it (zlib's zran method). Members already
//     listed can be looked up and read while the pass runs.
//   - MarshalBinary and LoadIndex persist a finished listing (and the
//     checkpoints) so that a remount lists with no read of the archive at
//     all. A damaged or mismatched index is refused, never half-trusted.
//
// # Reading
//
// Open returns a Reader for one handle. Stored zip members and tar members
// are plain ranges of the archive: Entry.Span gives their offset so the
// caller may serve them straight from its cache, and the Reader reads
// them through the ReaderAt with no copy of its own. Deflated zip members
// and tar.gz members are decompressed forward by the Reader, which keeps
// the last Limits.Window bytes so the kernel's slightly out-of-order reads
// need no restart; a read before the window restarts from the member's
// start (zip) or the nearest checkpoint (tar.gz), and a tar.gz read far
// ahead jumps to a later checkpoint. A tar.gz member read inflates at most
// one checkpoint span before the member, plus the member. The pass records,
// for every member, how far into the archive it had read once past the
// member's data; a member read hands that bound (plus slack) to
// PassOpener.OpenPass when the ReaderAt offers it, so a cache under the
// archive can stop its read-ahead there.
//
// # Promises
//
//   - Names are cleaned: slash-separated, relative, no "." or ".."
//     component, no NUL, no component over 255 bytes. Leading slashes are
//     stripped (as tar does); a name that would still climb out of the
//     archive is left out and reported.
//   - Duplicate names: the later member wins, in the earlier one's place. A
//     directory holding members is never replaced by a non-directory; a
//     file that a later member needs as a directory becomes one. Missing
//     parent directories appear as implicit entries.
//   - Symlinks are listed as symlinks and never followed by this package;
//     Entry.LinkEscapes marks a target that is absolute or climbs above
//     the archive's root, for the caller to refuse or show as it is.
//   - A member never yields a byte past its declared size. A deflated zip
//     member must decode to exactly its declared size and CRC-32: the read
//     that reaches the end fails with ErrChecksum or ErrFormat otherwise,
//     and every later read of that Reader fails too. A stored zip member
//     read in order to its end has its CRC-32 checked the same way. A
//     tar.gz pass checks every gzip trailer; a Reader that reads to the end
//     of a gzip member checks it again.
//   - Overlapping zip members (the overlapping zip bomb, golang/go#33026)
//     are refused: each member's header and data must end before the next
//     member's header and the central directory.
//   - Limits bound the entry count, the central directory's size, the
//     declared decompression ratio of a zip member, the tar.gz inflate
//     ratio and the number of checkpoints. Memory is bounded by the
//     central directory (zip), the listing itself, the checkpoints
//     (MaxCheckpoints times 32 KiB) and, per Reader, its window plus about
//     200 KiB of decompressor state; never by a member's size.
//   - A corrupt or truncated archive lists what could be read before the
//     damage, and Err says why the listing stopped or what it left out. A
//     zip with no readable end record or central directory, or a tar whose
//     first header is bad, is an error from the opener.
//   - Errors wrap ErrFormat, ErrChecksum, ErrOverlap, ErrLimit,
//     ErrUnsafeName or ErrUnsupported; any other error comes from the
//     ReaderAt, and a Reader retries it on the next read.
//
// # Why our own inflater
//
// compress/flate does not expose block boundaries or bit offsets, and
// cannot resume in the middle of a stream, which checkpoints need; the
// suggested github.com/timpalpant/gzran is not served by the module proxy.
// inflate.go is a small RFC 1951/1952 decoder that reports each block's
// start and resumes from a checkpoint. Its tests compare it with
// compress/flate on every block type and on fuzzed input (FuzzInflate),
// and resume it at every block boundary of streams made by gzip, pigz and
// compress/gzip. Zip members still use compress/flate.
//
// # Concurrency
//
// An Archive is safe for concurrent use; Archive.mu protects the listing,
// the problems and the checkpoints, which a tar.gz pass appends to while
// readers use them. A Reader serialises its own calls (its mutex protects
// its stream, window and CRC); use one Reader per open handle.
package archive
