package cache

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
)

// The model test drives a chunkTable with random transitions and checks it,
// after every step, against a reference model written as plainly as
// possible, together with a model of the disk (which chunks' bytes are in
// the data file, synced, and recorded in the index). Run it longer with
//
//	go test -run TestChunkTableModel -model.seed 7 -model.runs 200 -model.steps 20000 ./cache/
var (
	modelSeed  = flag.Uint64("model.seed", 1, "first seed of the chunk table model test")
	modelRuns  = flag.Int("model.runs", 20, "seeds the chunk table model test tries")
	modelSteps = flag.Int("model.steps", 2000, "steps per seed of the chunk table model test")
)

// refChunk is the reference model of one chunk and of its bytes on disk.
type refChunk struct {
	state   chunkState
	byRun   bool // claimed by a run (false: claimed for a check)
	checked map[int64]bool
	pins    int

	data    bool // its bytes are in the data file (hole not punched)
	durable bool // and synced
	record  bool // the index holds its record
}

type chunkModel struct {
	errorf func(format string, args ...any)
	rng    *rand.Rand
	lay    layout
	tab    *chunkTable
	ref    []refChunk
	runs   []*run
	trace  []string
}

func TestChunkTableModel(t *testing.T) {
	runs, steps := *modelRuns, *modelSteps
	if testing.Short() {
		runs = min(runs, 5)
	}
	for n := range runs {
		seed := *modelSeed + uint64(n)
		m := newChunkModel(t, seed)
		for range steps {
			m.step()
			if t.Failed() {
				t.Fatalf("seed %d: last steps:\n%s", seed, m.lastSteps(20))
			}
		}
	}
}

func newChunkModel(t *testing.T, seed uint64) *chunkModel {
	t.Helper()
	// Five chunks of 192 KiB (three blocks each) and a short last one of
	// one block: small enough that random steps hit the same chunk often.
	lay := newLayout(5*3*blockSize+blockSize/2, 4*blockSize)
	m := &chunkModel{errorf: t.Errorf, rng: rand.New(rand.NewPCG(seed, 0)), lay: lay, tab: newChunkTable(lay)}
	m.ref = make([]refChunk, lay.chunks)
	for i := range m.ref {
		m.ref[i].checked = map[int64]bool{}
	}
	return m
}

func (m *chunkModel) lastSteps(n int) string {
	s := ""
	for _, l := range m.trace[max(0, len(m.trace)-n):] {
		s += l + "\n"
	}
	return s
}

var errModelFail = errors.New("model: run failed")

// step applies one random transition to a random chunk, to the table and
// to the reference, and checks the invariants.
func (m *chunkModel) step() {
	i := m.rng.Int64N(m.lay.chunks)
	rc := &m.ref[i]
	t := m.tab
	var op string
	var got, legal bool
	switch k := m.rng.IntN(14); k {
	case 0, 1: // a scheduler claims a missing chunk for a run
		op = "claim"
		legal = rc.state == chunkMissing
		got = t.state(i) == chunkMissing
		if got {
			r := &run{prio: prioDemand, end: i + 1, writing: i}
			m.runs = append(m.runs, r)
			t.claimBy(i, r, nil)
		}
		if legal {
			rc.state, rc.byRun = chunkClaimed, true
		}
	case 2, 3: // the run's writer wrote the chunk's last byte
		op = "wrote"
		legal = rc.state == chunkClaimed && rc.byRun
		if legal {
			rc.data, rc.durable = true, false
		}
		got = t.wrote(i)
		if legal {
			rc.state = chunkWritten
		}
	case 4: // the committer: fdatasync, record, then commit
		op = "commit"
		legal = rc.state == chunkWritten
		if t.state(i) == chunkWritten {
			// The store's half, in its order.
			rc.durable = true
			rc.record = true
		}
		got = t.commit(i)
		if legal {
			rc.state = chunkVerified
		}
	case 5: // the run failed (or the commit did)
		op = "fail"
		legal = (rc.state == chunkClaimed && rc.byRun) || rc.state == chunkWritten
		got = t.fail(i, errModelFail)
		if legal {
			rc.state = chunkMissing
		}
	case 6: // a reader or Verify claims a committed chunk to check it
		op = "claimCheck"
		legal = rc.state == chunkCommitted
		got = t.claimCheck(i)
		if legal {
			rc.state, rc.byRun = chunkClaimed, false
		}
	case 7: // the checked blocks matched
		nb := m.lay.blocks(i)
		b0 := m.rng.Int64N(nb)
		b1 := b0 + 1 + m.rng.Int64N(nb-b0)
		op = fmt.Sprintf("pass[%d,%d)", b0, b1)
		legal = rc.state == chunkClaimed && !rc.byRun
		got = t.pass(i, b0, b1)
		if legal {
			for b := b0; b < b1; b++ {
				rc.checked[b] = true
			}
			rc.state = chunkCommitted
			if int64(len(rc.checked)) == nb {
				rc.state = chunkVerified
				clear(rc.checked)
			}
		}
	case 8: // a block did not match: record deleted, then drop
		op = "drop"
		legal = rc.state == chunkClaimed && !rc.byRun
		if t.state(i) == chunkClaimed && t.flight(i).run == nil {
			rc.record = false
		}
		got = t.drop(i)
		if legal {
			rc.state = chunkMissing
			clear(rc.checked)
		}
	case 9: // the budget evicts: begin, delete the record, punch, finish
		op = "evict"
		// A missing chunk may hold blocks fetched in part (or the bytes
		// of a failed fetch): the budget evicts it too.
		legal = (rc.state == chunkCommitted || rc.state == chunkVerified || rc.state == chunkMissing) && rc.pins == 0
		got = t.beginEvict(i)
		if got && rc.pins > 0 {
			m.errorf("chunk %d: evicted while pinned %d times", i, rc.pins)
		}
		if legal {
			rc.state = chunkEvicting
			clear(rc.checked)
		}
		if got {
			m.check(i, op+"(begun)")
			rc.record = false
			m.check(i, op+"(record deleted)")
			rc.data, rc.durable = false, false
		}
	case 10: // the hole is punched
		op = "finishEvict"
		legal = rc.state == chunkEvicting
		got = t.finishEvict(i)
		if legal {
			rc.state = chunkMissing
		}
	case 11: // a reader pins the chunks it serves
		op = "pin"
		legal, got = true, true
		t.pin(i, i+1)
		rc.pins++
	case 12:
		op = "unpin"
		legal = rc.pins > 0
		got = legal
		if legal {
			t.unpin(i, i+1)
			rc.pins--
		}
	case 13: // restart: a new table from the index
		if m.rng.IntN(8) != 0 {
			return
		}
		op = "restart"
		legal, got = true, true
		m.tab = newChunkTable(m.lay)
		for j := range m.ref {
			r := &m.ref[j]
			r.pins = 0
			clear(r.checked)
			r.state = chunkMissing
			if r.record {
				m.tab.load(int64(j))
				r.state = chunkCommitted
			}
			// Bytes not synced may or may not have survived; the model
			// keeps the worst case.
			if !r.durable {
				r.data = false
			}
		}
	}
	m.trace = append(m.trace, fmt.Sprintf("chunk %d: %s legal=%v table=%v -> %v", i, op, legal, got, m.tab.state(i)))
	if got != legal {
		m.errorf("chunk %d: %s: table said %v, reference %v", i, op, got, legal)
	}
	for j := range m.ref {
		m.check(int64(j), op)
	}
}

// check tests the invariants of chunk i after op.
func (m *chunkModel) check(i int64, op string) {
	t, rc := m.tab, &m.ref[i]
	fail := func(format string, args ...any) {
		m.errorf("after %s, chunk %d: %s", op, i, fmt.Sprintf(format, args...))
	}
	st := t.state(i)
	if st != rc.state {
		fail("state %v, reference %v", st, rc.state)
	}
	// Never servable unless written.
	if t.servable(i) && !(rc.data && (rc.state == chunkWritten || rc.state == chunkVerified)) {
		fail("servable in state %v with data=%v", rc.state, rc.data)
	}
	// Under-report only: the table's presence implies a record, and a
	// record implies synced bytes (never committed before durable).
	if t.present.get(i) && !rc.record {
		fail("present without an index record")
	}
	if rc.record && !(rc.durable && rc.data) {
		fail("index record without durable bytes")
	}
	if t.pinned(i) != (rc.pins > 0) {
		fail("pinned %v, reference pins %d", t.pinned(i), rc.pins)
	}
	// Checked blocks.
	if rc.state == chunkCommitted {
		for b := range m.lay.blocks(i) {
			if t.blocksVerified(i, b, b+1) != rc.checked[b] {
				fail("block %d checked %v, reference %v", b, t.blocksVerified(i, b, b+1), rc.checked[b])
			}
		}
	}
	if i == m.lay.chunks-1 {
		var present, verified, bytes int64
		for j := range m.lay.chunks {
			if t.present.get(j) {
				present++
				bytes += m.lay.chunkLen(j)
				if t.verified.get(j) {
					verified++
				}
			}
		}
		if present != t.nPresent || verified != t.nVerified || bytes != t.bytesPresent {
			m.errorf("after %s: counters present %d verified %d bytes %d, want %d %d %d",
				op, t.nPresent, t.nVerified, t.bytesPresent, present, verified, bytes)
		}
	}
}

// TestChunkTableModelCatches makes sure the model test can fail: a table
// that serves a claimed chunk breaks "never servable unless written".
func TestChunkTableModelCatches(t *testing.T) {
	m := newChunkModel(t, 1)
	m.tab.claimBy(0, &run{}, nil)
	m.ref[0].state, m.ref[0].byRun = chunkClaimed, true
	m.tab.written.set(0) // the bug: servable before its bytes are written
	var reports []string
	m.errorf = func(format string, args ...any) { reports = append(reports, fmt.Sprintf(format, args...)) }
	m.check(0, "bug")
	if len(reports) == 0 {
		t.Fatal("the model did not notice a servable chunk that was never written")
	}
}
