package audit

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// compactExt names the file a compressor writes before it replaces the
// open recording; one left by a crash is removed by RecoverUnsealed.
const compactExt = ".compact.tmp"

// compressor writes the sealed file of a recording from its lines: zstd
// frames, the first record a frame of its own (so that a recording damaged
// further on still says whose it is), then a frame per frameSize bytes of
// records, each ending with a line. A frame ends only when more follows,
// so that a file cut anywhere after the start loses something.
type compressor struct {
	dir, id, tmp string
	spares       *spares // where the open recording goes after the commit; nil: removed
	dst          *os.File
	bw           *bufio.Writer
	enc          *zstd.Encoder
	raw          int  // bytes of lines in the open frame
	head         bool // the first line is not complete yet
	cut          bool // end the frame before the next byte
	committed    bool // tmp has the sealed name
}

// newCompressor starts the sealed file of id in dir: in a spare file if sp
// has one, else in a new one.
func newCompressor(dir, id string, sp *spares) (*compressor, error) {
	tmp, flag := sp.take(), os.O_WRONLY|os.O_TRUNC
	if tmp == "" {
		tmp, flag = Path(dir, id)+compactExt, flag|os.O_CREATE
	}
	dst, err := os.OpenFile(tmp, flag, 0o600)
	if err != nil {
		return nil, fmt.Errorf("compressing recording: %w", err)
	}
	bw := writeBuffers.get()
	bw.Reset(dst)
	c := &compressor{dir: dir, id: id, tmp: tmp, spares: sp, dst: dst, bw: bw,
		enc: archivers.get(), head: true}
	c.enc.Reset(c.bw)
	return c, nil
}

// Write compresses p, lines or parts of lines.
func (c *compressor) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.cut {
			if err := c.enc.Close(); err != nil {
				return 0, err
			}
			c.enc.Reset(c.bw)
			c.raw, c.cut = 0, false
		}
		limit := len(p)
		if c.head || c.raw+len(p) >= frameSize {
			from := 0 // where a newline ends the frame
			if !c.head {
				from = max(0, frameSize-c.raw-1)
			}
			if i := bytes.IndexByte(p[from:], '\n'); i >= 0 {
				limit = from + i + 1
				c.cut, c.head = true, false
			}
		}
		if _, err := c.enc.Write(p[:limit]); err != nil {
			return 0, err
		}
		c.raw += limit
		p = p[limit:]
	}
	return n, nil
}

// commit ends the file, syncs it, and gives it the sealed name in place of
// the open recording at open, which becomes a spare (or is removed). It
// does not read the file back: a read would come from the page cache,
// which proves nothing about the disk, and each frame's checksum is checked
// whenever the recording is read.
func (c *compressor) commit(open string) error {
	err := c.enc.Close()
	if err == nil {
		err = c.bw.Flush()
	}
	if err == nil {
		err = c.dst.Sync()
	}
	if err == nil {
		err = c.dst.Close()
	}
	if err == nil {
		err = os.Rename(c.tmp, Path(c.dir, c.id))
	}
	var spare string
	if err == nil {
		c.committed = true
		spare, err = c.spares.setAside(open)
	}
	if err == nil {
		err = syncDir(c.dir)
	}
	if err != nil {
		return fmt.Errorf("compressing recording: %w", err)
	}
	// Only now, with both names on disk, may the spare be written over.
	c.spares.add(spare)
	return nil
}

// close releases c; after a commit it only gives the encoder back, before
// one it also removes the unfinished file.
func (c *compressor) close() {
	c.dst.Close()
	if !c.committed {
		os.Remove(c.tmp)
	}
	c.enc.Reset(nil)
	archivers.put(c.enc)
	c.bw.Reset(nil)
	writeBuffers.put(c.bw)
}

// compressSealed compresses the open recording of id, which the Log has
// just sealed, into its sealed file: the same bytes, not read as records
// (a change since would show when it is verified, as in any copy).
func compressSealed(dir, id string, sp *spares) error {
	open := OpenPath(dir, id)
	src, err := os.Open(open)
	if err != nil {
		return fmt.Errorf("compressing recording: %w", err)
	}
	defer src.Close()
	c, err := newCompressor(dir, id, sp)
	if err != nil {
		return err
	}
	defer c.close()
	buf := copyBuffers.get()
	defer copyBuffers.put(buf)
	if _, err := io.CopyBuffer(c, &untilZero{r: src}, buf); err != nil {
		return fmt.Errorf("compressing recording: %w", err)
	}
	return c.commit(open)
}

// spares keeps the files of compressed open recordings for the next
// compressions to write into (truncated first), instead of removing them
// and creating new ones: a session then makes one new file (its open
// recording) and removes none. Where ext4 runs without a journal (this
// project's benchmark machines), creating a file skips every inode freed in
// the last minutes, reading each from disk to tell: a file removed per
// session made each file created cost 0.2–1 ms of CPU (docs/BENCHMARKS.md).
// A spare's name is not a recording's (spare-N.compact.tmp), so readers
// skip it, and RecoverUnsealed removes those a stop leaves (or puts back
// one that is still a recording's only copy). A nil *spares keeps none.
type spares struct {
	dir   string
	mu    sync.Mutex
	free  []string
	aside int // set aside, not yet free
	next  int
}

// maxSpares is how many spare files a Log keeps at most: as many as
// recordings are compressed at a time, and as many again.
var maxSpares = 2 * cap(compressing)

// take returns a spare file to write into, or "" when there is none.
func (sp *spares) take() string {
	if sp == nil {
		return ""
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	n := len(sp.free)
	if n == 0 {
		return ""
	}
	p := sp.free[n-1]
	sp.free = sp.free[:n-1]
	return p
}

// setAside gives the file at path a spare's name and returns it, or
// removes the file when enough spares are kept. The spare is not written
// over until add: a crash of the machine before the directory is synced
// may keep the rename and lose the sealed file's, and then the spare is
// the recording RecoverUnsealed puts back.
func (sp *spares) setAside(path string) (string, error) {
	if sp == nil {
		return "", os.Remove(path)
	}
	sp.mu.Lock()
	if len(sp.free)+sp.aside >= maxSpares {
		sp.mu.Unlock()
		return "", os.Remove(path)
	}
	name := filepath.Join(sp.dir, spareName(sp.next))
	sp.next++
	sp.aside++
	sp.mu.Unlock()
	if err := os.Rename(path, name); err != nil {
		sp.mu.Lock()
		sp.aside--
		sp.mu.Unlock()
		return "", err
	}
	return name, nil
}

// add makes a spare set aside available; "" is none.
func (sp *spares) add(name string) {
	if sp == nil || name == "" {
		return
	}
	sp.mu.Lock()
	sp.aside--
	sp.free = append(sp.free, name)
	sp.mu.Unlock()
}

func spareName(n int) string { return "spare-" + strconv.Itoa(n) + compactExt }

// sparePattern matches the names of spares.
const sparePattern = "spare-*" + compactExt

// removeAll removes the spare files.
func (sp *spares) removeAll() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for _, p := range sp.free {
		os.Remove(p)
	}
	sp.free = nil
}
