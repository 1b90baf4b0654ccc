package audit

import (
	"bufio"
	"io"

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

// archivers compress sealed recordings (compressor): large blocks with
// entropy coding, for size and for fast reading. On recordings the
// fastest level compresses better than the default one, and faster
// (measured on Postgres query records: 8.6× at 184 MB/s against 7.9× at
// 127 MB/s, BenchmarkCompressSealed); without entropy coding it is 1.35×
// faster again but only 4.8× smaller.
var archivers = newFreeList(4, func() *zstd.Encoder {
	e, _ := zstd.NewWriter(nil, // cannot fail with these options
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true),
		zstd.WithWindowSize(1<<20),
	)
	return e
})

// writeBuffers are the compressors' file buffers.
var writeBuffers = newFreeList(4, func() *bufio.Writer { return bufio.NewWriterSize(nil, 64<<10) })

// copyBuffers carry an open recording's bytes to its compressor.
var copyBuffers = newFreeList(4, func() []byte { return make([]byte, 64<<10) })

// freeList keeps up to a few values for reuse. Unlike a sync.Pool it is not
// emptied by the garbage collector, which in a busy gateway runs many times
// between two sessions' ends: each short session's compression would
// otherwise make and clear a fresh encoder, its 1 MiB history and its
// tables (BenchmarkCompressSealed/after-gc: 199 KB allocated a record
// against 480 bytes).
type freeList[T any] struct {
	free    chan T
	newItem func() T
}

func newFreeList[T any](n int, newItem func() T) *freeList[T] {
	return &freeList[T]{free: make(chan T, n), newItem: newItem}
}

func (f *freeList[T]) get() T {
	select {
	case v := <-f.free:
		return v
	default:
		return f.newItem()
	}
}

// put keeps v if fewer than the list's size are kept; otherwise v is left
// to the collector.
func (f *freeList[T]) put(v T) {
	select {
	case f.free <- v:
	default:
	}
}
