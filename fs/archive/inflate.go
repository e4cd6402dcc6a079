package archive

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
)

// inflater decodes gzip (RFC 1952) or raw deflate (RFC 1951) and can stop
// and resume at deflate block boundaries, which compress/flate cannot: it
// reports each block's start (bit position in the input, offset in the
// output) so that a caller can keep checkpoints, and it can start at such
// a checkpoint given the 32 KiB of output before it (zlib's zran method).
// Output is decoded into a 64 KiB ring that also holds the match history.
type inflater struct {
	src   *bufio.Reader
	in    int64 // input offset of the next byte src yields
	bits  uint64
	nbits uint
	gzip  bool

	hist      [histSize]byte
	wpos      int64 // output offset of the next byte decoded
	rpos      int64 // output offset of the next byte Read returns
	histStart int64 // matches may reach back to here (member start or the checkpoint's window)
	crcFrom   int64 // crc covers the member's output up to here

	state      inflateState
	final      bool
	storedLeft int
	lit, dist  *huffman
	dynLit     huffman
	dynDist    huffman
	clen       huffman
	lens       [maxLit + maxDist]uint8

	memberStart int64  // output offset where the current gzip member began
	crc         uint32 // of the member's output [memberStart, crcFrom)
	members     int

	// onBlock, when set, is called at the start of every deflate block,
	// with all output before it decoded (and in hist).
	onBlock func(bitPos, out int64)
	err     error
}

type inflateState uint8

const (
	stGzipHeader inflateState = iota
	stBlockHeader
	stStored
	stHuffman
	stTrailer
	stEnd
)

const (
	histSize   = 1 << 16
	histMask   = histSize - 1
	windowSize = 1 << 15 // the farthest a deflate match reaches
	maxMatch   = 258
	maxLit     = 286
	maxDist    = 30
	maxCodeLen = 15
)

// newInflater decodes from src, which yields the input starting at input
// offset in (gzip: the start of a gzip member).
func newInflater(src *bufio.Reader, in int64, gzip bool) *inflater {
	z := &inflater{src: src, in: in, gzip: gzip, state: stBlockHeader}
	if gzip {
		z.state = stGzipHeader
	}
	return z
}

// resumeInflater starts a gzip decoder at a checkpoint; src yields the
// input from the checkpoint's byte cp.in.
func resumeInflater(src *bufio.Reader, cp *checkpoint) (*inflater, error) {
	z := &inflater{src: src, in: cp.in, gzip: true, state: stBlockHeader}
	if cp.bit > 0 {
		if err := z.pull(); err != nil {
			return nil, z.corrupt(err)
		}
		z.bits >>= cp.bit
		z.nbits -= uint(cp.bit)
	}
	z.wpos, z.rpos, z.crcFrom = cp.out, cp.out, cp.out
	z.histStart = cp.out - int64(len(cp.window))
	for i, b := range cp.window {
		z.hist[(z.histStart+int64(i))&histMask] = b
	}
	z.memberStart, z.crc, z.members = cp.memberStart, cp.crc, 1
	return z, nil
}

// window returns a copy of the history a checkpoint at the current
// output offset needs.
func (z *inflater) window() []byte {
	from := max(z.histStart, z.wpos-windowSize)
	w := make([]byte, z.wpos-from)
	for i := range w {
		w[i] = z.hist[(from+int64(i))&histMask]
	}
	return w
}

func (z *inflater) bitPos() int64 { return z.in*8 - int64(z.nbits) }

// Read returns decoded bytes. The error after the last byte is io.EOF; a
// corrupt stream gives an error wrapping ErrFormat or ErrChecksum.
func (z *inflater) Read(p []byte) (int, error) {
	for z.rpos == z.wpos {
		if z.err != nil {
			return 0, z.err
		}
		z.step()
	}
	n := 0
	for n < len(p) && z.rpos < z.wpos {
		at := int(z.rpos & histMask)
		end := min(histSize, at+int(z.wpos-z.rpos))
		c := copy(p[n:], z.hist[at:end])
		n += c
		z.rpos += int64(c)
	}
	return n, nil
}

// step decodes until the ring holds about 64 KiB unread, or the stream
// ends or fails.
func (z *inflater) step() {
	for z.err == nil && z.wpos-z.rpos < histSize-maxMatch {
		switch z.state {
		case stGzipHeader:
			z.err = z.gzipHeader()
		case stBlockHeader:
			z.err = z.blockHeader()
		case stStored:
			z.err = z.storedBlock()
		case stHuffman:
			z.err = z.huffmanBlock()
		case stTrailer:
			z.err = z.trailer()
		case stEnd:
			z.err = io.EOF
		}
	}
	z.updateCRC()
}

func (z *inflater) updateCRC() {
	for z.crcFrom < z.wpos {
		at := int(z.crcFrom & histMask)
		end := min(histSize, at+int(z.wpos-z.crcFrom))
		z.crc = crc32.Update(z.crc, crc32.IEEETable, z.hist[at:end])
		z.crcFrom += int64(end - at)
	}
}

// corrupt turns a decoding failure into an ErrFormat error; errors of the
// input itself (not io.EOF) pass through so that a retry can succeed.
// errTruncated marks a stream that ended early: what came before it
// decoded from the archive's own bytes, unlike a stream that does not
// decode or fails its CRC-32.
var errTruncated = errors.New("compressed stream truncated")

func (z *inflater) corrupt(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: %w at input offset %d", ErrFormat, errTruncated, z.in)
	}
	return err
}

func (z *inflater) corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: deflate at input bit %d: %s", ErrFormat, z.bitPos(), fmt.Sprintf(format, args...))
}

func (z *inflater) pull() error {
	b, err := z.src.ReadByte()
	if err != nil {
		return err
	}
	z.bits |= uint64(b) << z.nbits
	z.nbits += 8
	z.in++
	return nil
}

func (z *inflater) getBits(n uint) (uint32, error) {
	for z.nbits < n {
		if err := z.pull(); err != nil {
			return 0, z.corrupt(err)
		}
	}
	v := uint32(z.bits & (1<<n - 1))
	z.bits >>= n
	z.nbits -= n
	return v, nil
}

// readByte reads a whole byte at a byte boundary (gzip header, trailer,
// stored blocks): from the bit buffer first, then the input.
func (z *inflater) readByte() (byte, error) {
	if z.nbits >= 8 {
		b := byte(z.bits)
		z.bits >>= 8
		z.nbits -= 8
		return b, nil
	}
	b, err := z.src.ReadByte()
	if err == nil {
		z.in++
	}
	return b, err
}

func (z *inflater) alignToByte() {
	drop := z.nbits & 7
	z.bits >>= drop
	z.nbits -= drop
}

func (z *inflater) gzipHeader() error {
	first := z.members == 0
	b0, err := z.readByte()
	if !first && err == io.EOF {
		z.state = stEnd
		return nil
	}
	if err != nil {
		if err == io.EOF {
			return fmt.Errorf("%w: empty gzip stream", ErrFormat)
		}
		return err
	}
	if !first && b0 != 0x1f {
		// gzip(1) ignores trailing garbage (tape padding, appended bytes).
		z.state = stEnd
		return nil
	}
	var h [9]byte
	for i := range h {
		if h[i], err = z.readByte(); err != nil {
			return z.corrupt(err)
		}
	}
	if b0 != 0x1f || h[0] != 0x8b || h[1] != 8 {
		return fmt.Errorf("%w: not a gzip stream at input offset %d", ErrFormat, z.in-10)
	}
	flg := h[2]
	if flg&0xe0 != 0 {
		return fmt.Errorf("%w: gzip header with reserved flags %#x", ErrFormat, flg)
	}
	if flg&0x04 != 0 { // FEXTRA
		lo, err1 := z.readByte()
		hi, err2 := z.readByte()
		if err1 != nil || err2 != nil {
			return z.corrupt(io.ErrUnexpectedEOF)
		}
		for range int(lo) | int(hi)<<8 {
			if _, err := z.readByte(); err != nil {
				return z.corrupt(err)
			}
		}
	}
	for _, f := range []byte{0x08, 0x10} { // FNAME, FCOMMENT: zero-terminated
		if flg&f == 0 {
			continue
		}
		for {
			b, err := z.readByte()
			if err != nil {
				return z.corrupt(err)
			}
			if b == 0 {
				break
			}
		}
	}
	if flg&0x02 != 0 { // FHCRC
		for range 2 {
			if _, err := z.readByte(); err != nil {
				return z.corrupt(err)
			}
		}
	}
	z.updateCRC()
	z.members++
	z.memberStart, z.histStart, z.crc, z.crcFrom = z.wpos, z.wpos, 0, z.wpos
	z.state = stBlockHeader
	return nil
}

func (z *inflater) trailer() error {
	z.alignToByte()
	var t [8]byte
	for i := range t {
		b, err := z.readByte()
		if err != nil {
			return z.corrupt(err)
		}
		t[i] = b
	}
	z.updateCRC()
	if got, want := z.crc, le32(t[:]); got != want {
		return fmt.Errorf("%w: gzip member CRC-32 %08x, trailer says %08x", ErrChecksum, got, want)
	}
	if got, want := uint32(z.wpos-z.memberStart), le32(t[4:]); got != want {
		return fmt.Errorf("%w: gzip member of %d bytes (mod 2^32), trailer says %d", ErrFormat, got, want)
	}
	// The member is checked: whatever comes next (another member, or
	// trailing bytes that are not one) starts here, and damage found there
	// is not this member's.
	z.memberStart = z.wpos
	z.state = stGzipHeader
	return nil
}

func (z *inflater) blockHeader() error {
	if z.onBlock != nil {
		z.updateCRC()
		z.onBlock(z.bitPos(), z.wpos)
	}
	h, err := z.getBits(3)
	if err != nil {
		return err
	}
	z.final = h&1 != 0
	switch h >> 1 {
	case 0:
		z.alignToByte()
		ln, err := z.getBits(16)
		if err != nil {
			return err
		}
		nln, err := z.getBits(16)
		if err != nil {
			return err
		}
		if ln != ^nln&0xffff {
			return z.corruptf("stored block length %d does not match its complement", ln)
		}
		z.storedLeft = int(ln)
		z.state = stStored
	case 1:
		z.lit, z.dist = fixedTables()
		z.state = stHuffman
	case 2:
		if err := z.dynamicTables(); err != nil {
			return err
		}
		z.lit, z.dist = &z.dynLit, &z.dynDist
		z.state = stHuffman
	default:
		return z.corruptf("reserved block type")
	}
	return nil
}

func (z *inflater) endBlock() {
	switch {
	case !z.final:
		z.state = stBlockHeader
	case z.gzip:
		z.state = stTrailer
	default:
		z.state = stEnd
	}
}

func (z *inflater) storedBlock() error {
	for z.storedLeft > 0 && z.wpos-z.rpos < histSize-1 {
		b, err := z.readByte()
		if err != nil {
			return z.corrupt(err)
		}
		z.hist[z.wpos&histMask] = b
		z.wpos++
		z.storedLeft--
	}
	if z.storedLeft == 0 {
		z.endBlock()
	}
	return nil
}

var (
	lenBase   = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lenExtra  = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase  = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	// The order code length code lengths are sent in (RFC 1951 3.2.7).
	clenOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

func (z *inflater) huffmanBlock() error {
	for z.wpos-z.rpos < histSize-maxMatch {
		sym, err := z.decode(z.lit)
		if err != nil {
			return err
		}
		if sym < 256 {
			z.hist[z.wpos&histMask] = byte(sym)
			z.wpos++
			continue
		}
		if sym == 256 {
			z.endBlock()
			return nil
		}
		sym -= 257
		if sym >= len(lenBase) {
			return z.corruptf("length symbol %d", sym+257)
		}
		extra, err := z.getBits(uint(lenExtra[sym]))
		if err != nil {
			return err
		}
		length := int(lenBase[sym]) + int(extra)
		dsym, err := z.decode(z.dist)
		if err != nil {
			return err
		}
		if dsym >= len(distBase) {
			return z.corruptf("distance symbol %d", dsym)
		}
		extra, err = z.getBits(uint(distExtra[dsym]))
		if err != nil {
			return err
		}
		dist := int64(distBase[dsym]) + int64(extra)
		if dist > z.wpos-z.histStart {
			return z.corruptf("distance %d reaches before the start of the stream", dist)
		}
		for range length {
			z.hist[z.wpos&histMask] = z.hist[(z.wpos-dist)&histMask]
			z.wpos++
		}
	}
	return nil
}

func (z *inflater) dynamicTables() error {
	h, err := z.getBits(14)
	if err != nil {
		return err
	}
	nlit, ndist, nclen := int(h&31)+257, int(h>>5&31)+1, int(h>>10)+4
	if nlit > maxLit || ndist > maxDist {
		return z.corruptf("%d literal/length and %d distance codes", nlit, ndist)
	}
	var clens [19]uint8
	for i := range nclen {
		v, err := z.getBits(3)
		if err != nil {
			return err
		}
		clens[clenOrder[i]] = uint8(v)
	}
	if !z.clen.init(clens[:]) {
		return z.corruptf("invalid code length code")
	}
	lens := z.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		sym, err := z.decode(&z.clen)
		if err != nil {
			return err
		}
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep int
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return z.corruptf("repeat with no previous length")
			}
			v, err := z.getBits(2)
			if err != nil {
				return err
			}
			rep, val = 3+int(v), lens[i-1]
		case 17:
			v, err := z.getBits(3)
			if err != nil {
				return err
			}
			rep = 3 + int(v)
		default:
			v, err := z.getBits(7)
			if err != nil {
				return err
			}
			rep = 11 + int(v)
		}
		if i+rep > len(lens) {
			return z.corruptf("code lengths repeat past their end")
		}
		for range rep {
			lens[i] = val
			i++
		}
	}
	if !z.dynLit.init(lens[:nlit]) || !z.dynDist.init(lens[nlit:]) {
		return z.corruptf("invalid literal/length or distance code")
	}
	return nil
}

// decode reads one Huffman-coded symbol.
func (z *inflater) decode(h *huffman) (int, error) {
	for z.nbits < h.maxBits {
		if err := z.pull(); err != nil {
			if err == io.EOF {
				break // the code may be shorter than maxBits
			}
			return 0, err
		}
	}
	if h.maxBits == 0 {
		return 0, z.corruptf("symbol from an empty code")
	}
	e := h.table[z.bits&(1<<h.maxBits-1)]
	n := uint(e & 15)
	if n == 0 {
		return 0, z.corruptf("invalid Huffman code")
	}
	if n > z.nbits {
		return 0, z.corrupt(io.ErrUnexpectedEOF)
	}
	z.bits >>= n
	z.nbits -= n
	return int(e >> 4), nil
}

// huffman is a canonical Huffman code as a lookup table indexed by the
// next maxBits input bits (first bit lowest); each slot holds sym<<4|len.
type huffman struct {
	table   []uint16
	maxBits uint
}

// init builds the code from code lengths. Like zlib and compress/flate it
// accepts a complete code, an empty one (an error only if used), or a
// single code of length 1; any other incomplete or over-subscribed set of
// lengths is refused.
func (h *huffman) init(lengths []uint8) bool {
	var count [maxCodeLen + 1]int
	maxBits := 0
	for _, l := range lengths {
		if l > 0 {
			count[l]++
			maxBits = max(maxBits, int(l))
		}
	}
	h.maxBits = uint(maxBits)
	if maxBits == 0 {
		return true
	}
	left := 1 << maxBits
	for l := 1; l <= maxBits; l++ {
		left -= count[l] << (maxBits - l)
	}
	if left < 0 || (left > 0 && !(maxBits == 1 && count[1] == 1)) {
		return false
	}
	var next [maxCodeLen + 2]int
	code := 0
	for l := 1; l <= maxBits; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}
	size := 1 << maxBits
	if cap(h.table) < size {
		h.table = make([]uint16, size)
	}
	h.table = h.table[:size]
	clear(h.table)
	for sym, l := range lengths {
		if l == 0 {
			continue
		}
		c := next[l]
		next[l]++
		rev := 0 // the code's bits reversed: the stream sends them first bit lowest
		for b := 0; b < int(l); b++ {
			rev = rev<<1 | (c>>b)&1
		}
		for j := rev; j < size; j += 1 << l {
			h.table[j] = uint16(sym)<<4 | uint16(l)
		}
	}
	return true
}

var (
	fixedOnce          sync.Once
	fixedLit, fixedDst huffman
)

func fixedTables() (*huffman, *huffman) {
	fixedOnce.Do(func() {
		var l [288]uint8
		for i := range l {
			switch {
			case i < 144:
				l[i] = 8
			case i < 256:
				l[i] = 9
			case i < 280:
				l[i] = 7
			default:
				l[i] = 8
			}
		}
		fixedLit.init(l[:])
		var d [32]uint8 // 30 and 31 are codes that decode to an invalid distance
		for i := range d {
			d[i] = 5
		}
		fixedDst.init(d[:])
	})
	return &fixedLit, &fixedDst
}
