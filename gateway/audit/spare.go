package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// spares keeps the files of recordings that were sealed and compressed,
// zeroed, with their mappings, for the next sessions' open recordings. A
// new session then writes over pages that are in the page cache and mapped
// already, instead of fresh pages of a new file, which the kernel has to
// find, zero and account for when first written (the preparer's work) and
// free again when the file is removed. A spare holds nothing but zero
// bytes: it is zeroed after its recording's sealed file is in place, under
// a name that no reader takes for a recording (.spare-N), and what a crash
// leaves under such a name is removed at the next start.
type spares struct {
	dir string

	mu     sync.Mutex
	free   []*mapped
	next   int  // the number in the next spare's name
	closed bool // spares are closed, not kept
}

// Bounds of what spares keep: at most maxSpares files (a variable for
// benchmarks), each of at most maxSpareSize bytes (a longer session's file
// is removed), so that they hold at most 128 MiB of the page cache, which
// the kernel may reclaim once written back, and as many reservations of
// address space as files (mapReserve).
var maxSpares = 32

const maxSpareSize = 4 << 20

// spareGlob matches the names of spares in the recordings directory.
const spareGlob = ".spare-*"

// newSpares returns the spares of dir, removing what a stop left there.
func newSpares(dir string) *spares {
	left, _ := filepath.Glob(filepath.Join(dir, spareGlob))
	for _, p := range left {
		os.Remove(p)
	}
	return &spares{dir: dir}
}

// take gives a spare the name path, which must not exist, and returns it
// as an open recording; nil, nil when there is none, or when it could not
// be renamed (it is then removed, and the caller creates a new file).
func (p *spares) take(path string) (*mapped, error) {
	p.mu.Lock()
	if len(p.free) == 0 {
		p.mu.Unlock()
		return nil, nil
	}
	w := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	p.mu.Unlock()
	err := unix.Renameat2(unix.AT_FDCWD, w.path, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		p.put(w)
		return nil, fmt.Errorf("creating recording: %w", &os.PathError{Op: "rename", Path: path, Err: err})
	}
	if err != nil { // RENAME_NOREPLACE not supported here, say
		w.remove()
		return nil, nil
	}
	w.path = path
	return w, nil
}

// keep makes w, the mapped open recording at open whose sealed file is in
// place, a spare: renamed, zeroed, kept. It reports whether open is gone;
// if not, the caller removes it and closes w.
func (p *spares) keep(w *mapped) bool {
	p.mu.Lock()
	full := p.closed || len(p.free) >= maxSpares || w.size > maxSpareSize
	n := p.next
	p.next++
	p.mu.Unlock()
	if full {
		return false
	}
	path := filepath.Join(p.dir, ".spare-"+strconv.Itoa(n))
	if err := os.Rename(w.path, path); err != nil {
		return false
	}
	w.path = path
	for off := 0; off < w.off; off += len(zeros) {
		if copyIn(w.m[off:w.off], zeros[:min(len(zeros), w.off-off)]) != nil {
			w.remove() // the file was changed behind the gateway's back
			return true
		}
	}
	w.off = 0
	p.put(w)
	return true
}

// zeros is what spares are zeroed with.
var zeros [64 << 10]byte

// put returns w to the free list, or removes it once spares are closed.
func (p *spares) put(w *mapped) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		w.remove()
		return
	}
	p.free = append(p.free, w)
	p.mu.Unlock()
}

// close removes every spare; spares kept after it are removed at once.
func (p *spares) close() {
	p.mu.Lock()
	free := p.free
	p.free, p.closed = nil, true
	p.mu.Unlock()
	for _, w := range free {
		w.remove()
	}
}
