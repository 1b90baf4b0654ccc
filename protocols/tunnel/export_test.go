package tunnel

// What the external tests of this package see of its internals.

// MaxCoalesced is maxCoalesced.
const MaxCoalesced = maxCoalesced

// Queued returns the bytes c holds for its next send.
func (c *CoalescingConn) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf)
}
