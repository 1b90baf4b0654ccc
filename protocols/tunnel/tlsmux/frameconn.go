package tlsmux

import (
	"crypto/tls"
	"encoding/binary"
)

// yamux v0.1.2 frame header: version, type, flags (2), stream id (4),
// length (4).
const (
	frameHeaderLen = 12
	frameTypeData  = 0
)

// frameConn is the TLS connection as yamux sees it. yamux v0.1.2 writes each
// frame's 12-byte header and its body in two Writes, which on TLS costs a
// record and a syscall each; frameConn holds a data frame's header back and
// sends it with the body in one Write. Only yamux's send loop writes to it.
//
// When the connection under the tls.Conn is a BatchConn, the records of one
// frame also leave in a single write.
type frameConn struct {
	*tls.Conn
	held  bool
	buf   []byte
	batch batcher // nil when the conn under TLS cannot batch
}

func newFrameConn(c *tls.Conn) *frameConn {
	fc := &frameConn{Conn: c}
	fc.batch, _ = c.NetConn().(batcher)
	return fc
}

func (c *frameConn) Write(p []byte) (int, error) {
	if c.held {
		c.held = false
		c.buf = append(c.buf[:frameHeaderLen], p...)
		if c.batch != nil {
			c.batch.Hold()
		}
		_, err := c.Conn.Write(c.buf)
		if c.batch != nil {
			if ferr := c.batch.Flush(); err == nil {
				err = ferr
			}
		}
		if err != nil {
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
	return c.Conn.Write(p)
}
