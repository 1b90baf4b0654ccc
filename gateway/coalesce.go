package gateway

import (
	"net"
	"sync"
)

// maxCoalesced bounds the bytes a coalescingConn queues: a writer waits
// while that much is queued. With the send under way, which took the queue
// before, a conn holds at most about twice this.
const maxCoalesced = 256 << 10

// coalescingConn is a tunnel stream under the HTTP/2 connection that carries
// a gRPC service's calls to one agent. Each call's frames are flushed on their
// own by the HTTP/2 client, which on the bare stream costs every call its own
// tunnel frame, TLS record and socket write, and the agent a read and a write
// more. Here writes are gathered and sent by one goroutine: what the calls
// write while a send is under way leaves together in the next one. A Write
// returns once its bytes are queued; a send's error is returned by every
// Write after it.
type coalescingConn struct {
	net.Conn
	mu   sync.Mutex
	cond sync.Cond // the queue has room, or err is set
	buf  []byte    // queued, not yet sent
	err  error
	wake chan struct{} // a send is due
	done chan struct{} // closed by Close
	once sync.Once
}

func newCoalescingConn(c net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	cc.cond.L = &cc.mu
	go cc.send()
	return cc
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && len(c.buf) >= maxCoalesced {
		c.cond.Wait()
	}
	if c.err != nil {
		c.mu.Unlock()
		return 0, c.err
	}
	first := len(c.buf) == 0
	c.buf = append(c.buf, p...)
	c.mu.Unlock()
	if first {
		select {
		case c.wake <- struct{}{}:
		default: // a send is already due
		}
	}
	return len(p), nil
}

// send writes what is queued, all of it at once, until the conn fails or
// is closed.
func (c *coalescingConn) send() {
	var out []byte
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		c.mu.Lock()
		out, c.buf = c.buf, out[:0]
		c.cond.Broadcast()
		c.mu.Unlock()
		if len(out) == 0 {
			continue
		}
		if _, err := c.Conn.Write(out); err != nil {
			c.fail(err)
			return
		}
	}
}

func (c *coalescingConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Close closes the stream; what is still queued is dropped.
func (c *coalescingConn) Close() error {
	c.once.Do(func() { close(c.done) })
	c.fail(net.ErrClosed)
	return c.Conn.Close()
}
