package audit

import (
	"bufio"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// A sealed recording is a sequence of zstd frames holding its JSON lines,
// a frame for each frameSize bytes of records, so that a reader's memory
// stays bounded.
const frameSize = 1 << 20

// maxWindow bounds the memory a reader gives one frame.
const maxWindow = 8 << 20

// newDecoder returns a streaming reader of the zstd frames in r, one after
// another, checking each frame's checksum.
func newDecoder(r io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(bufio.NewReaderSize(r, 256<<10),
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(maxWindow),
		zstd.WithDecoderMaxMemory(64<<20),
	)
}

// archivers compress sealed recordings (archiveOpen): large blocks with
// entropy coding, for size and for fast reading.
var archivers = sync.Pool{New: func() any {
	e, _ := zstd.NewWriter(nil, // cannot fail with these options
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true),
		zstd.WithWindowSize(1<<20),
	)
	return e
}}
