package tunnel

import (
	"net"
	"sync"
	"time"
)

// maxCoalesced bounds the bytes a CoalescingConn queues: a writer waits
// while that much is queued. With the send under way, which took the queue
// before, a conn holds at most about twice this.
const maxCoalesced = 256 << 10

// CoalescingConn is a net.Conn whose writes are gathered and sent by one
// goroutine: what its writers write while a send is under way leaves
// together in the next send, one Write on the conn under it. Used where many
// small writes from many sources meet one connection: the tunnel's TLS
// connection under yamux (the frames of all the streams: one TLS write and
// one socket write for many).
//
// A Write returns once its bytes are queued, and waits while the queue is
// full; a send's error is returned by every Write after it. Each Write's
// bytes are sent whole and in order, and what was written before Close is
// sent before the conn is closed.
type CoalescingConn struct {
	net.Conn
	mu      sync.Mutex
	cond    sync.Cond // the queue has room, or err is set
	buf     []byte    // queued, not yet sent
	err     error
	wake    chan struct{} // a send is due
	done    chan struct{} // closed by Close
	stopped chan struct{} // closed when send has ended
	once    sync.Once
}

// NewCoalescingConn wraps c and starts its sending goroutine, which ends
// with Close or the first error.
func NewCoalescingConn(c net.Conn) *CoalescingConn {
	cc := &CoalescingConn{Conn: c, wake: make(chan struct{}, 1),
		done: make(chan struct{}), stopped: make(chan struct{})}
	cc.cond.L = &cc.mu
	go cc.send()
	return cc
}

func (c *CoalescingConn) Write(p []byte) (int, error) {
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
// is closed; on Close it writes what was still queued, then ends.
func (c *CoalescingConn) send() {
	defer close(c.stopped)
	var out []byte
	for {
		closing := false
		select {
		case <-c.wake:
		case <-c.done:
			closing = true
		}
		c.mu.Lock()
		out, c.buf = c.buf, out[:0]
		c.cond.Broadcast()
		c.mu.Unlock()
		if len(out) > 0 {
			if _, err := c.Conn.Write(out); err != nil {
				c.fail(err)
				return
			}
		}
		if closing {
			return
		}
	}
}

func (c *CoalescingConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}

// closeFlushTimeout bounds how long Close waits for what was queued to be
// written.
const closeFlushTimeout = time.Second

// Close refuses further writes, sends what was queued (waiting at most
// closeFlushTimeout: a peer that does not read cannot hold it), then closes
// the conn under it.
func (c *CoalescingConn) Close() error {
	c.fail(net.ErrClosed)
	c.once.Do(func() { close(c.done) })
	if c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout)) == nil {
		<-c.stopped
	}
	return c.Conn.Close()
}
