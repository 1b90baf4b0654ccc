package tlsmux

import (
	"net"
	"sync"
)

// BatchConn is a net.Conn under a tunnel's tls.Conn that can hold writes
// between Hold and Flush. What frameConn sends at once (a yamux data frame
// of 16 KiB plus its 12-byte header, or the frames of many streams) does not
// fit one TLS record; without batching each record would leave in a write
// syscall of its own. recordConn holds them and flushes once per send.
//
// Writes made while a batch is held, from any goroutine (a TLS alert, a key
// update), join the batch in order: crypto/tls serializes its record writes,
// so the stream of bytes is the same as without batching.
type BatchConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

// NewBatchConn wraps c. Until Hold is called it writes straight through.
func NewBatchConn(c net.Conn) *BatchConn { return &BatchConn{Conn: c} }

// Write writes p, or appends it to the held batch.
func (c *BatchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Hold starts a batch.
func (c *BatchConn) Hold() {
	c.mu.Lock()
	c.hold = true
	c.mu.Unlock()
}

// Flush ends the batch and writes what it holds in one write.
func (c *BatchConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = false
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// batcher is what frameConn looks for under the tls.Conn.
type batcher interface {
	Hold()
	Flush() error
}
