// Package cache serves a remote object from a sparse local file that it
// fills, chunk by chunk, from a Source (the network), and keeps across runs
// in a bbolt index.
//
// # What a caller may rely on
//
//   - A read returns the object's bytes of one version, or an error: never a
//     byte that was not received from a validated answer of that version,
//     and never, after a restart, a block that failed its CRC-32C.
//   - A chunk is recorded as present only after its bytes were fdatasynced;
//     a crash leaves an index that under-reports, never one that
//     over-reports. A failed fetch leaves its chunks missing.
//   - A chunk is fetched once however many readers want it; a read waits on
//     its own ctx, and giving up never cancels a fetch others wait on.
//   - Demand reads go before read-ahead, read-ahead before Fill, Fill before
//     prefetch; one Pool bounds the Source.Fetch calls of every File that
//     shares it. The Pool is the one connection budget: a Source that
//     reports the server's load (Pool.ReportLoad, which fits
//     fetch.Options.OnLoad) makes it lower and raise its limit, and it keeps
//     granting by priority while lowered.
//   - One process holds a cache directory at a time (ErrLocked). A remote
//     change makes the File stale (ErrStale) for every later read. A failing
//     data disk degrades the File to uncached reads, never to errors the
//     network could have avoided.
//   - Every exported method of File, Reader and Pool is safe for concurrent
//     use. A File is valid until Close, a Reader until its Close or its
//     File's.
//
// # Parts
//
// A File is a small facade over three parts:
//
//   - the chunk table (chunkTable): every chunk's state and its transitions,
//     the flights readers wait on, the pins of readers serving bytes;
//   - the scheduler (plan, run, claims, Reader's read-ahead, prefetch and the
//     Pool): who fetches which chunks when; it asks the table what is
//     missing and tells it what was written, and never touches the index or
//     the data file itself;
//   - the store (store.go: the data file, loading and checking records;
//     index.go: the bbolt index and its meta; commit.go: the group
//     committer; dir.go: which directories and files it opens): bytes and
//     records on disk. It reports each commit round to the File, which
//     flips the table.
//
// # Chunk lifecycle
//
//	missing → claimed (by a run) → written (servable, not durable)
//	        → committed (record durable; after a restart, not yet checked)
//	        → verified (checked or written this session)
//
// A run that fails returns its claimed and written chunks to missing. A
// committed chunk whose block fails its CRC is dropped to missing (record
// deleted first). The budget will evict unpinned committed chunks: record
// deleted, then hole punched, then missing. See chunkTable for the
// transitions and for how 64 KiB blocks fit.
//
// # Locks
//
// One line each, in the order they nest (outer first):
//
//   - File.mu protects the chunk table (flights, pins, partial checks,
//     counters, bitset writes), every run's end and writing, every plan
//     (including each Reader's read-ahead plan, Reader.ra), the prefetch
//     follow target and prefetching, and makes closed and wg.Add atomic.
//   - Pool.mu protects the Pool's queues, active count, limit and yield
//     promises; it is taken under File.mu (runWriter.advance), never the
//     other way round.
//   - Reader.mu protects a Reader's sequential detector (next, window); it
//     is never held while taking another lock.
//   - run.pmu protects a run's progress (from, written, the previous pass,
//     advanced); taken alone.
//   - committer.mu protects the pending records; taken alone.
//
// Atomics, lock-free: the table's present, verified and written bitsets
// (written under File.mu), File.closed, stale and degraded, Reader.closed,
// the counters, run.moved.
//
// # The read path
//
//  1. fs: fileHandle.Read bounds the wait by the op timeout and calls
//     Reader.ReadAt.
//  2. Reader.ReadAt updates the sequential detector and calls
//     Reader.readAhead, which claims the window for read-ahead workers
//     (readAheadWorker → File.work → claimNextLocked → fetchRun).
//  3. File.ReadAt clamps the span and pins its chunks (enterPinned).
//  4. File.read calls File.ensure, then reads the data file; after a disk
//     failure it goes to readUncached and fetchDirect instead.
//  5. File.ensure returns at once when chunkTable.servableRange says every
//     chunk is servable (the warm path: no lock).
//  6. Otherwise File.claimForRead, under File.mu, looks at each chunk: waits
//     on flights (chunkWait), steals chunks a background run has not reached
//     (claims.free, claims.cut), claims missing ones into demand runs
//     (claims.newRun, claims.claim → chunkTable.claimBy) started by
//     goJobLocked(fetchRun), and claims committed ones to check their blocks
//     (chunkTable.claimCheck → File.verifyClaimed).
//  7. File.fetchRun takes a Pool slot (Pool.acquire) and calls Source.Fetch
//     with a runWriter.
//  8. runWriter.Write writes each piece to the data file at its offset,
//     updates the block CRC and run.wrote (waking chunkWait.wait for readers
//     whose bytes are now written); at each chunk's end it calls
//     chunkTable.wrote (the chunk is servable) and committer.add, then
//     runWriter.advance, which may end the run for a thief or a queued
//     request (Pool.shouldYield).
//  9. committer.round: dataFile.Sync (fdatasync), one bbolt Update with the
//     records, then chunkTable.commit, which closes each flight's done.
//  10. The wake-up: chunkWait.wait returns (early, from run progress, or at
//     the flight's end); ensure goes round again and finds the span
//     servable; File.read copies it from the data file (dataFile.ReadAt);
//     File.ReadAt unpins (leavePinned).
package cache
