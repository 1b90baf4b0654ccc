package tlsmux

import (
	"crypto/tls"
	"encoding/binary"

	"github.com/postern/postern/protocols/tunnel"
)

// yamux v0.1.2 frame header: version, type, flags (2), stream id (4),
// length (4).
const (
	frameHeaderLen = 12
	frameTypeData  = 0
)

// frameConn is the TLS connection as yamux sees it. Its writes go through a
// CoalescingConn: yamux's send loop hands a frame over and goes on to the
// next while one goroutine sends, and the frames of every stream that were
// handed over during a send leave together in the next — one TLS write
// (records of up to 16 KiB) and one socket write for many small frames (the queries and answers of many
// sessions), where yamux alone writes each frame on its own. yamux v0.1.2
// also writes each frame's 12-byte header and its body in two Writes;
// frameConn holds a data frame's header back and hands it over with the
// body, so that a frame is never split over two sends. Only yamux's send
// loop writes to it.
type frameConn struct {
	*tls.Conn // reads
	out       *tunnel.CoalescingConn
	held      bool
	buf       []byte
}

func newFrameConn(c *tls.Conn) *frameConn {
	rc := recordConn{Conn: c}
	rc.batch, _ = c.NetConn().(batcher)
	return &frameConn{Conn: c, out: tunnel.NewCoalescingConn(rc)}
}

func (c *frameConn) Write(p []byte) (int, error) {
	if c.held {
		c.held = false
		c.buf = append(c.buf[:frameHeaderLen], p...)
		if _, err := c.out.Write(c.buf); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	// A data frame with a length always has its body written next.
	if len(p) == frameHeaderLen && p[1] == frameTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		c.buf = append(c.buf[:0], p...)
		c.held = true
		return len(p), nil
	}
	return c.out.Write(p)
}

// Close sends what was handed over (waiting at most a second, see
// CoalescingConn.Close), then closes the TLS connection.
func (c *frameConn) Close() error { return c.out.Close() }

// recordConn writes to the TLS connection. When the connection under it is
// a BatchConn, the records of one write (more than 16 KiB) leave in a single
// socket write.
type recordConn struct {
	*tls.Conn
	batch batcher // nil when the conn under TLS cannot batch
}

func (c recordConn) Write(p []byte) (int, error) {
	if c.batch == nil {
		return c.Conn.Write(p)
	}
	c.batch.Hold()
	n, err := c.Conn.Write(p)
	if ferr := c.batch.Flush(); err == nil {
		err = ferr
	}
	return n, err
}
