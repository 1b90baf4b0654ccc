package tlsmux

import (
	"crypto/tls"
	"errors"
	"sync"
	"time"
)

// maxPending bounds the bytes of frames waiting to be written: past it,
// yamux's send loop waits, as it would on a slow connection.
const maxPending = 512 << 10

// frameConn is the TLS connection as yamux sees it. It combines writes:
// yamux's send loop hands it each frame (a 12-byte header, then the body,
// in two Writes), which it only appends to a buffer; a writer goroutine
// sends everything buffered in one tls.Conn.Write whenever it is idle. When
// many streams are busy, the frames that queue up while one write is in the
// kernel leave together in the next, so a frame costs a fraction of a
// syscall and of a TLS record instead of one each; when one stream is
// alone, each frame still leaves at once.
//
// When the connection under the tls.Conn is a BatchConn, the records of one
// write also leave in a single syscall.
//
// A write error is reported by the Writes after it; yamux then closes the
// session. Close writes what is buffered (yamux's GoAway) first.
type frameConn struct {
	*tls.Conn
	batch batcher // nil when the conn under TLS cannot batch

	mu      sync.Mutex
	cond    sync.Cond // signals pending data to the writer, room and ends to Write
	pending []byte
	spare   []byte
	writing bool
	closed  bool
	err     error
	done    chan struct{} // closed when the writer goroutine has ended
}

func newFrameConn(c *tls.Conn) *frameConn {
	fc := &frameConn{Conn: c, done: make(chan struct{})}
	fc.batch, _ = c.NetConn().(batcher)
	fc.cond.L = &fc.mu
	go fc.writeLoop()
	return fc
}

var errFrameConnClosed = errors.New("tunnel connection closed")

func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) >= maxPending && c.err == nil && !c.closed {
		c.cond.Wait()
	}
	switch {
	case c.err != nil:
		return 0, c.err
	case c.closed:
		return 0, errFrameConnClosed
	}
	c.pending = append(c.pending, p...)
	if !c.writing {
		c.cond.Broadcast()
	}
	return len(p), nil
}

// writeLoop sends what Write buffered, all of it at each turn.
func (c *frameConn) writeLoop() {
	defer close(c.done)
	c.mu.Lock()
	for {
		for len(c.pending) == 0 && !c.closed {
			c.cond.Wait()
		}
		if len(c.pending) == 0 { // closed, nothing left
			c.mu.Unlock()
			return
		}
		buf := c.pending
		c.pending, c.spare = c.spare[:0], nil
		c.writing = true
		c.mu.Unlock()

		err := c.send(buf)

		c.mu.Lock()
		c.writing = false
		c.spare = buf[:0]
		if err != nil {
			c.err = err
			c.pending = nil
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
		c.cond.Broadcast() // room for waiting writers
	}
}

func (c *frameConn) send(buf []byte) error {
	if c.batch != nil {
		c.batch.Hold()
	}
	_, err := c.Conn.Write(buf)
	if c.batch != nil {
		if ferr := c.batch.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

// closeFlushTimeout bounds how long Close waits for buffered frames to
// leave: a peer that reads nothing must not hold the close.
const closeFlushTimeout = time.Second

// Close writes what is buffered (for at most closeFlushTimeout), then closes
// the TLS connection, which also breaks a write that is stuck.
func (c *frameConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	t := time.NewTimer(closeFlushTimeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
	err := c.Conn.Close()
	<-c.done
	return err
}
