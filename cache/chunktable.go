package cache

// chunkState is where one chunk is in its lifecycle (see chunkTable).
type chunkState uint8

const (
	chunkMissing   chunkState = iota // not in the data file as far as we know; claimable
	chunkClaimed                     // in flight: a run is fetching it (flight.run), or its record is being checked (flight.run nil)
	chunkWritten                     // every byte is in the data file; with the committer, not yet durable
	chunkCommitted                   // its record is durable in the index; not checked this session
	chunkVerified                    // committed, and checked (or written) this session
	chunkEvicting                    // its record is deleted; its hole is not yet punched
)

func (s chunkState) String() string {
	return [...]string{"missing", "claimed", "written", "committed", "verified", "evicting"}[s]
}

// chunkTable owns the state of every chunk of one File and is the only code
// that changes it. The transitions, one method each:
//
//	missing   -claimBy(run)-> claimed    a scheduler claims it for a run
//	claimed   -wrote->        written    the run's writer wrote its last byte
//	written   -commit->       verified   the committer synced and recorded it
//	claimed   -fail->         missing    the run failed
//	written   -fail->         missing    the commit failed (disk error)
//	(restart) -load->         committed  the index holds its record
//	committed -claimCheck->   claimed    a reader or Verify checks its blocks
//	claimed   -pass->         committed  the blocks matched (verified once all have)
//	claimed   -release->      committed  the disk could not be read: nothing learnt
//	claimed   -drop->         missing    a block did not match (record deleted first)
//	committed -beginEvict->   evicting   unpinned only (record deleted next,
//	verified  -beginEvict->   evicting   then the hole punched)
//	missing   -beginEvict->   evicting   fetched in part: its blocks record
//	                                     dropped here, then the hole punched
//	evicting  -finishEvict->  missing
//
// The states:
//
//   - missing: nothing is known of its bytes. A scheduler may claim it.
//   - claimed: a flight exists, naming the run fetching it (or none while its
//     blocks are checked); readers wait on the flight or on the run's
//     progress. A more urgent run may steal a claimed chunk its writer has
//     not reached: detach, then claimBy or abandon, within one critical
//     section, so the flight and its waiters carry over.
//   - written: all its bytes are in the data file, from a validated answer of
//     the pinned version, so it is servable; not yet durable. Only the
//     committer moves it on.
//   - committed: the index holds its record, so (after a restart) its bytes
//     are durable, but they were not checked this session. Its blocks may be
//     checked one by one (blocksVerified, verifyBlocks).
//   - verified: servable from the data file as it is.
//   - evicting: the budget takes it; readers that find it wait on its flight
//     and then fetch it again.
//
// Servable means a reader may copy the chunk's bytes from the data file:
// written or verified (a committed chunk is servable block by block, once
// the blocks read were checked). Readers pin the chunks they serve for the
// length of their data file read; beginEvict refuses a pinned chunk. So a
// pinned chunk is never evicted, a chunk is never servable unless it was
// written, and the table's presence never runs ahead of the index, nor the
// index ahead of the synced data file (under-report only).
//
// Blocks: a chunk's 64 KiB checksum blocks are tracked only for the chunks
// that are checked in part (partial); a chunk's state stands for all its
// blocks otherwise. Sub-chunk fetches will record written blocks in the same
// per-chunk map, so a chunk's presence and its checks share one home.
//
// Concurrency: the table is not locked by itself. Every transition and every
// look at flights, pins and partial happens under its owner's lock (File.mu);
// present, verified and written are atomic bitsets, so servable and the
// presence tests of the hot read path are lock-free. That is safe because a
// servable chunk's bytes stay right until it is evicted: fail keeps written
// bytes (they are of the pinned version), drop takes only chunks that were
// not servable whole, and beginEvict refuses a chunk a reader has pinned
// (readers pin before they look).
type chunkTable struct {
	lay layout

	present  bitset // committed or verified: the index holds its record
	verified bitset // present and checked (or written) this session
	written  bitset // written, not yet committed
	// fresh marks the chunks committed from a fetch this session: their
	// bytes went through the page cache moments ago, so read-ahead advice
	// for them would only walk pages already there (see File.willNeed).
	fresh   bitset
	flights map[int64]*flight
	// partial holds, for each committed chunk checked only in part this
	// session, which of its blocks were checked (bit b of word b/64). A
	// chunk leaves it when it is verified whole or dropped; it holds at
	// most maxPartlyVerified chunks.
	partial map[int64][]uint64
	// blocks holds, for each missing chunk fetched in part this session
	// (see run.blocks), which of its blocks are in the data file, written
	// from a validated answer of the pinned version (bit b of word b/64).
	// Those blocks are servable. A chunk leaves it when it is committed
	// whole or forgotten; it holds at most maxPartlyVerified chunks.
	blocks map[int64][]uint64
	pins   map[int64]int32 // readers serving each pinned chunk now

	nPresent, nVerified, bytesPresent int64
}

func newChunkTable(lay layout) *chunkTable {
	return &chunkTable{
		lay:      lay,
		present:  newBitset(lay.chunks),
		verified: newBitset(lay.chunks),
		written:  newBitset(lay.chunks),
		fresh:    newBitset(lay.chunks),
		flights:  make(map[int64]*flight),
		partial:  make(map[int64][]uint64),
		blocks:   make(map[int64][]uint64),
		pins:     make(map[int64]int32),
	}
}

// flight is the single-flight record of one chunk that is claimed: being
// fetched, checked or evicted. Waiters block on done; err is written before
// done is closed and read only after. A stolen chunk keeps its flight when it
// moves to the thief's run, so its waiters never notice.
type flight struct {
	done     chan struct{}
	err      error
	run      *run // the run fetching the chunk; nil while checking or evicting. Guarded by File.mu.
	evicting bool // the chunk's record is gone and its hole being punched
}

func newFlight(r *run) *flight { return &flight{done: make(chan struct{}), run: r} }

// state returns chunk i's state.
func (t *chunkTable) state(i int64) chunkState {
	if fl := t.flights[i]; fl != nil {
		switch {
		case fl.evicting:
			return chunkEvicting
		case t.written.get(i):
			return chunkWritten
		}
		return chunkClaimed
	}
	switch {
	case t.verified.get(i):
		return chunkVerified
	case t.present.get(i):
		return chunkCommitted
	}
	return chunkMissing
}

// servable reports whether chunk i may be read whole from the data file now.
// Lock-free.
func (t *chunkTable) servable(i int64) bool {
	return t.written.get(i) || (t.present.get(i) && t.verified.get(i))
}

// servableRange reports whether every chunk in [first, end) is servable.
// Lock-free.
func (t *chunkTable) servableRange(first, end int64) bool {
	for i := first; i < end; i++ {
		if !t.servable(i) {
			return false
		}
	}
	return true
}

// flight returns chunk i's flight, or nil when it is not claimed.
func (t *chunkTable) flight(i int64) *flight { return t.flights[i] }

// load records that the index held chunk i's record at Open (missing →
// committed).
func (t *chunkTable) load(i int64) {
	delete(t.blocks, i)
	if t.present.get(i) {
		return
	}
	t.present.set(i)
	t.nPresent++
	t.bytesPresent += t.lay.chunkLen(i)
}

// claimBy claims missing chunk i for run r (missing → claimed) and returns its
// flight; fl, if not nil, is a stolen chunk's flight, which it keeps. The
// caller checked the chunk is missing.
func (t *chunkTable) claimBy(i int64, r *run, fl *flight) *flight {
	if fl == nil {
		fl = newFlight(r)
	}
	fl.run = r
	t.flights[i] = fl
	return fl
}

// claimCheck claims committed chunk i to check its blocks (committed →
// claimed), and reports whether it could.
func (t *chunkTable) claimCheck(i int64) bool {
	if t.flights[i] != nil || !t.present.get(i) || t.verified.get(i) {
		return false
	}
	t.flights[i] = newFlight(nil)
	return true
}

// detach takes claimed chunk i's flight out of the table for a thief (see
// claims.cut); the caller gives it to claimBy or abandon before it lets go of
// the lock.
func (t *chunkTable) detach(i int64) *flight {
	fl := t.flights[i]
	delete(t.flights, i)
	return fl
}

// abandon ends a detached flight that nobody claimed: the chunk is missing,
// and its waiters look again.
func abandon(fl *flight) {
	fl.err = errAbandoned
	close(fl.done)
}

// wrote records that every byte of claimed chunk i is in the data file
// (claimed → written), and reports whether i was claimed by a run.
func (t *chunkTable) wrote(i int64) bool {
	fl := t.flights[i]
	if fl == nil || fl.run == nil || fl.evicting || t.written.get(i) {
		return false
	}
	t.written.set(i)
	return true
}

// commit records that written chunk i's bytes were synced and its record
// committed (written → verified) and wakes its waiters. It reports whether i
// was written.
func (t *chunkTable) commit(i int64) bool {
	if !t.written.get(i) {
		return false
	}
	t.load(i)
	t.markVerified(i)
	t.written.clear(i)
	t.fresh.set(i)
	t.resolve(i, nil)
	return true
}

// fail returns claimed or written chunk i to missing and wakes its waiters
// with err. A chunk claimed for a check or an eviction is not a run's to fail.
func (t *chunkTable) fail(i int64, err error) bool {
	fl := t.flights[i]
	if fl == nil || fl.run == nil || fl.evicting {
		return false
	}
	t.written.clear(i)
	t.resolve(i, err)
	return true
}

// pass ends the check of chunk i whose blocks [b0, b1) matched their records
// (claimed → verified once every block has).
func (t *chunkTable) pass(i, b0, b1 int64) bool {
	fl := t.flights[i]
	if fl == nil || fl.run != nil || fl.evicting || !t.present.get(i) {
		return false
	}
	t.verifyBlocks(i, b0, b1)
	t.resolve(i, nil)
	return true
}

// release ends the check of chunk i that said nothing against it (the disk
// could not be read): it stays committed.
func (t *chunkTable) release(i int64) bool {
	fl := t.flights[i]
	if fl == nil || fl.run != nil || fl.evicting {
		return false
	}
	t.resolve(i, nil)
	return true
}

// drop ends the check of chunk i whose bytes did not match its record, which
// the caller has already deleted from the index (claimed → missing).
func (t *chunkTable) drop(i int64) bool {
	fl := t.flights[i]
	if fl == nil || fl.run != nil || fl.evicting {
		return false
	}
	t.forget(i)
	t.resolve(i, nil)
	return true
}

// beginEvict starts evicting chunk i (committed, verified, or missing with
// some blocks in the data file; unpinned, not in flight → evicting) and
// reports whether it may: the caller then deletes its record, punches its
// hole and calls finishEvict. A chunk fetched in part has no record; its
// blocks record (which makes those blocks servable) is dropped here, before
// the hole is punched.
func (t *chunkTable) beginEvict(i int64) bool {
	if t.flights[i] != nil || t.pins[i] > 0 {
		return false
	}
	t.forget(i)
	fl := newFlight(nil)
	fl.evicting = true
	t.flights[i] = fl
	return true
}

// finishEvict ends the eviction of chunk i, whose record is deleted and hole
// punched (evicting → missing), and wakes its waiters.
func (t *chunkTable) finishEvict(i int64) bool {
	fl := t.flights[i]
	if fl == nil || !fl.evicting {
		return false
	}
	t.resolve(i, errAbandoned)
	return true
}

// pin counts a reader serving chunks [first, end) from the data file.
func (t *chunkTable) pin(first, end int64) {
	for i := first; i < end; i++ {
		t.pins[i]++
	}
}

// unpin undoes pin.
func (t *chunkTable) unpin(first, end int64) {
	for i := first; i < end; i++ {
		if t.pins[i] <= 1 {
			delete(t.pins, i)
		} else {
			t.pins[i]--
		}
	}
}

// pinned reports whether a reader is serving chunk i now.
func (t *chunkTable) pinned(i int64) bool { return t.pins[i] > 0 }

// resolve ends chunk i's flight with err and wakes its waiters.
func (t *chunkTable) resolve(i int64, err error) {
	fl := t.flights[i]
	if fl == nil {
		return
	}
	delete(t.flights, i)
	fl.err = err
	close(fl.done)
}

// markVerified records that present chunk i matches its checksum.
func (t *chunkTable) markVerified(i int64) {
	if !t.verified.get(i) {
		t.verified.set(i)
		t.nVerified++
	}
	delete(t.partial, i)
}

// blocksVerified reports whether blocks [b0, b1) of present chunk i were
// checked this session (all of them are once the chunk is verified).
func (t *chunkTable) blocksVerified(i, b0, b1 int64) bool {
	if t.verified.get(i) {
		return true
	}
	return allMarked(t.partial[i], b0, b1)
}

// verifyBlocks records that blocks [b0, b1) of present chunk i match their
// checksums, and marks the chunk verified once all do.
func (t *chunkTable) verifyBlocks(i, b0, b1 int64) {
	if t.verified.get(i) {
		return
	}
	nb := t.lay.blocks(i)
	marks := t.partial[i]
	if marks == nil {
		if len(t.partial) >= maxPartlyVerified {
			// Forgetting which blocks were checked only means checking
			// them again; it keeps this map from growing with the file.
			clear(t.partial)
		}
		marks = make([]uint64, (nb+63)/64)
		t.partial[i] = marks
	}
	markRange(marks, b0, b1)
	if allMarked(marks, 0, nb) {
		t.markVerified(i)
	}
}

// forget clears chunk i's presence and checks.
func (t *chunkTable) forget(i int64) {
	if t.present.get(i) {
		t.present.clear(i)
		t.nPresent--
		t.bytesPresent -= t.lay.chunkLen(i)
	}
	if t.verified.get(i) {
		t.verified.clear(i)
		t.nVerified--
	}
	t.fresh.clear(i)
	delete(t.partial, i)
	delete(t.blocks, i)
}

// wroteBlocks records that blocks [b0, b1) of missing chunk i, claimed by a
// run fetching it in part, are in the data file.
func (t *chunkTable) wroteBlocks(i, b0, b1 int64) {
	if t.present.get(i) {
		return
	}
	marks := t.blocks[i]
	if marks == nil {
		if len(t.blocks) >= maxPartlyVerified {
			// Forgetting blocks only means fetching them again.
			clear(t.blocks)
		}
		marks = make([]uint64, (t.lay.blocks(i)+63)/64)
		t.blocks[i] = marks
	}
	markRange(marks, b0, b1)
}

// anyBlocks reports whether missing chunk i has blocks fetched in part.
func (t *chunkTable) anyBlocks(i int64) bool { return t.blocks[i] != nil }

// blocksPresent reports whether blocks [b0, b1) of missing chunk i were
// fetched in part this session (see wroteBlocks).
func (t *chunkTable) blocksPresent(i, b0, b1 int64) bool {
	return allMarked(t.blocks[i], b0, b1)
}

// endPart ends the flight of chunk i, fetched in part by a run that wrote
// every block it asked for: the chunk is missing again, with those blocks
// present (see wroteBlocks).
func (t *chunkTable) endPart(i int64) bool {
	fl := t.flights[i]
	if fl == nil || fl.run == nil || fl.evicting || t.written.get(i) {
		return false
	}
	t.resolve(i, nil)
	return true
}
