package audit

import (
	"bufio"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// A recording is a sequence of zstd frames holding its JSON lines. A frame
// is kept open across writes, each write ending a block (Flush), so that
// every write is readable at once and still compresses against what came
// before; it is closed (with its checksum) after frameSize bytes of
// records, when its session has been idle for a flush interval, and at the
// seal.
const frameSize = 1 << 20

// window bounds the history a frame compresses against, and so the
// memory of a session with an open frame (about 0.5 MiB with the table).
const window = 1 << 16

var encoders = sync.Pool{New: func() any {
	e, _ := zstd.NewWriter(nil, // cannot fail with these options
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		// Records are small and alike: matches do nearly all of the work,
		// and entropy coding of each small block cost three times as much
		// for the same size (measured on Postgres query records).
		zstd.WithNoEntropyCompression(true),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true),
		zstd.WithLowerEncoderMem(true),
		zstd.WithWindowSize(window),
	)
	return e
}}

// newEncoder returns a pooled encoder writing to w; putEncoder returns it
// after Close.
func newEncoder(w io.Writer) *zstd.Encoder {
	e := encoders.Get().(*zstd.Encoder)
	e.Reset(w)
	return e
}

func putEncoder(e *zstd.Encoder) {
	e.Reset(nil)
	encoders.Put(e)
}

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

// archivers compress whole recordings at once (Compact, recovery): large
// blocks with entropy coding, for size and for fast reading.
var archivers = sync.Pool{New: func() any {
	e, _ := zstd.NewWriter(nil, // cannot fail with these options
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true),
		zstd.WithWindowSize(1<<20),
	)
	return e
}}
