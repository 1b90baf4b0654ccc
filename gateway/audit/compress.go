package audit

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

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
	dst          *os.File
	bw           *bufio.Writer
	enc          *zstd.Encoder
	raw          int  // bytes of lines in the open frame
	head         bool // the first line is not complete yet
	cut          bool // end the frame before the next byte
}

func newCompressor(dir, id string) (*compressor, error) {
	tmp := Path(dir, id) + compactExt
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("compressing recording: %w", err)
	}
	bw := writeBuffers.get()
	bw.Reset(dst)
	c := &compressor{dir: dir, id: id, tmp: tmp, dst: dst, bw: bw,
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
// the open recording at open. It does not read the file back: a read would
// come from the page cache, which proves nothing about the disk, and each
// frame's checksum is checked whenever the recording is read.
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
	if err == nil {
		err = os.Remove(open)
	}
	if err == nil {
		err = syncDir(c.dir)
	}
	if err != nil {
		return fmt.Errorf("compressing recording: %w", err)
	}
	return nil
}

// close releases c; after a commit it only gives the encoder back, before
// one it also removes the unfinished file.
func (c *compressor) close() {
	c.dst.Close()
	os.Remove(c.tmp) // gone after a successful commit
	c.enc.Reset(nil)
	archivers.put(c.enc)
	c.bw.Reset(nil)
	writeBuffers.put(c.bw)
}

// compressSealed compresses the open recording of id, which the Log has
// just sealed, into its sealed file: the same bytes, not read as records
// (a change since would show when it is verified, as in any copy).
func compressSealed(dir, id string) error {
	open := OpenPath(dir, id)
	src, err := os.Open(open)
	if err != nil {
		return fmt.Errorf("compressing recording: %w", err)
	}
	defer src.Close()
	c, err := newCompressor(dir, id)
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
