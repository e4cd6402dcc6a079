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
// A File is a small facade (file.go, read.go, verify.go) over three parts
// that it wires together:
//
//   - the chunk table (chunktable.go): every chunk's state and its
//     transitions, the flights readers wait on, the pins of readers serving
//     bytes;
//   - the scheduler (scheduler.go; demand.go: claiming for a read;
//     readahead.go; plan.go: Fill and prefetch; run.go: runs, stealing;
//     fetchrun.go: one Source.Fetch and its writer; deadline.go: demand run
//     deadlines; pool.go: the connection budget): who fetches which chunks
//     when. It asks the table what is missing and tells it what was claimed
//     and written, and reaches the disk only through the store;
//   - the store (store.go: the data file, loading and checking records;
//     seal.go: the seal a clean close writes and the next Open trusts;
//     index.go: the bbolt index and its meta; commit.go: the group
//     committer; dir.go: which directories and files it opens): bytes and
//     records on disk. It reports each commit round to the File
//     (File.durable), which flips the table.
//
// # Chunk lifecycle
//
//	missing → claimed (by a run) → written (servable, not durable)
//	        → committed (record durable; after a restart, not yet checked)
//	        → verified (checked or written this session)
//
// A run that fails returns its claimed and written chunks to missing. A
// committed chunk whose block fails its CRC is dropped to missing (record
// deleted first). The budget (budget.go, ledger.go, evict.go) evicts
// unpinned committed chunks: record deleted, then hole punched, then
// missing. See chunkTable for the transitions and for how 64 KiB blocks fit.
//
// # Locks
//
// One line each, in the order they nest (outer first):
//
//   - Budget.mu protects a Budget's files, slab and log-once flag; File.mu
//     is taken under it (eviction, syncing the ledger), never the other way
//     round: runWriter reserves (fileBudget.charge) without File.mu. The
//     ledger's flock is taken under Budget.mu and alone.
//   - File.mu (the scheduler's mu) protects the chunk table (flights, pins,
//     partial checks, counters, bitset writes), every run's end, writing and
//     deadline, every plan (Fill's, prefetch's, and the read-ahead plan of
//     each Reader stream), the prefetch follow target (followAt, followBy)
//     and prefetching, and makes scheduler.closed and wg.Add atomic.
//   - Pool.mu protects the Pool's queues, active count, limit, epoch and
//     yield promises; it is taken under File.mu (runWriter.advance), never
//     the other way round.
//   - runContext.mu protects a demand run's current deadline; taken under
//     File.mu (run.extendDeadline) and alone.
//   - Reader.mu protects a Reader's streams and random detector (streams,
//     reads, seeks, read; a stream's next, consumed, window, grown, waited,
//     used); it is never held while taking another lock. A stream's ra is
//     set when the stream is made and never changes; the plan it points at
//     is File.mu's: the Reader hands it, and its closed flag, to the
//     scheduler (scheduler.readAhead, scheduler.stopReadAhead,
//     scheduler.stopRuns) after letting go of Reader.mu.
//   - run.pmu protects a run's progress (from, written, the previous pass,
//     advanced); taken alone.
//   - committer.mu protects the pending records; taken alone.
//
// Atomics, lock-free: the table's present, verified and written bitsets
// (written under File.mu), scheduler.closed and stale, store.cause,
// Reader.closed and Reader.limit, the counters, run.moved and run.stopAt
// (set by Reader.Close through scheduler.stopRuns, read by the run's writer
// at each block boundary).
//
// # The read path
//
//  1. fs: fileHandle.Read bounds the wait by the op timeout and calls
//     Reader.ReadAt.
//  2. Reader.ReadAt files the read under a stream (Reader.track: the
//     read-ahead it earned by bytes consumed; a seek cancels the previous
//     stream's unconsumed read-ahead, scheduler.stopReadAhead; what it
//     earned is cut at Reader.LimitReadAhead's end); from a chunk of
//     read-ahead on, while the stream's lead is under a chunk, it calls
//     scheduler.aheadBlocks (one run per chunk of the blocks up to the
//     lead, run.blocks, nobody waiting; Reader.leadRead grows the lead),
//     and after that scheduler.readAhead, which extends the
//     stream's plan and starts
//     read-ahead workers (scheduler.readAheadWorker → scheduler.work →
//     scheduler.claimNextLocked → scheduler.fetchRun).
//  3. File.ReadAt clamps the span and pins its chunks (File.enterPinned).
//  4. File.read calls File.ensure, then reads the data file (store.readAt);
//     after a disk failure it goes to File.readUncached and
//     scheduler.fetchDirect instead.
//  5. File.ensure returns at once when chunkTable.servableRange says every
//     chunk is servable (the warm path: no lock).
//  6. Otherwise scheduler.claimForRead, under File.mu, looks at each chunk
//     (blocks a read fetched in part earlier are servable,
//     chunkTable.blocksPresent):
//     it waits on flights (chunkWait), extending a demand run's deadline
//     (run.extendDeadline); steals chunks a background run has not reached
//     (claims.free, claims.cut); claims missing ones into demand runs (of
//     only the 64 KiB blocks a read touches while its stream has earned
//     less than a chunk of read-ahead or reads ahead by a lead:
//     run.blocks, scheduler.partOf)
//     (claims.newRun, claims.claim → chunkTable.claimBy) started by
//     scheduler.goJobLocked(scheduler.fetchRun); and claims committed ones
//     to check their blocks (chunkTable.claimCheck → File.verifyClaimed).
//  7. scheduler.fetchRun gives a demand run its deadline ctx
//     (scheduler.demandContext), takes a Pool slot (Pool.admit) and calls
//     Source.Fetch with a runWriter.
//  8. runWriter.Write writes each piece to the data file (store.writeAt),
//     updates the block CRC and run.wrote (waking chunkWait.wait for readers
//     whose bytes are now written); at each chunk's end it calls
//     chunkTable.wrote (the chunk is servable) and committer.add, then
//     runWriter.advance, which may end the run for a thief or a queued
//     request (Pool.shouldYield). At each block boundary,
//     runWriter.stopped ends the run there if the Reader it fetches for
//     has closed (run.stopAt): the blocks written stay, as blocks fetched
//     in part.
//  9. committer.round: dataFile.Sync (fdatasync), one bbolt Update with the
//     records, then File.durable → chunkTable.commit, which closes each
//     flight's done.
//  10. The wake-up: chunkWait.wait returns (early, from run progress, or at
//     the flight's end); File.ensure goes round again and finds the span
//     servable; File.read copies it from the data file; File.ReadAt unpins
//     (File.leavePinned).
package cache
