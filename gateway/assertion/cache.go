package assertion

import (
	"encoding/binary"
	"sync"
	"time"
)

// cache maps (subject, audience, groups) to the last token signed for them.
// It holds at most MaxCached entries: when full, a put first drops the
// entries that are too old to hand out, then arbitrary ones (Go's map
// order) until a quarter of the room is free, so sweeps stay rare.
type cache struct {
	mu sync.Mutex
	m  map[string]entry
}

type entry struct {
	token string
	iat   time.Time
	key   *signingKey // the key that signed token
}

// fresh reports whether e may be handed out at now under the current key.
func (e entry) fresh(key *signingKey, now time.Time) bool {
	return e.key == key && !now.Before(e.iat) && now.Sub(e.iat) < ReuseFor
}

// appendCacheKey appends an unambiguous encoding of c to b: each string
// length-prefixed, so no choice of bytes in a name can collide.
func appendCacheKey(b []byte, c Claims) []byte {
	b = appendString(b, c.Subject)
	b = appendString(b, c.Audience)
	for _, g := range c.Groups {
		b = appendString(b, g)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (c *cache) get(key []byte, signer *signingKey, now time.Time) (string, bool) {
	c.mu.Lock()
	e, ok := c.m[string(key)] // no allocation: the compiler converts in place
	c.mu.Unlock()
	if !ok || !e.fresh(signer, now) {
		return "", false
	}
	return e.token, true
}

func (c *cache) put(key []byte, e entry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]entry)
	}
	if _, ok := c.m[string(key)]; !ok && len(c.m) >= MaxCached {
		c.sweep(e.key, now)
	}
	c.m[string(key)] = e
}

// sweep frees room; c.mu is held.
func (c *cache) sweep(current *signingKey, now time.Time) {
	for k, e := range c.m {
		if !e.fresh(current, now) {
			delete(c.m, k)
		}
	}
	for k := range c.m {
		if len(c.m) <= MaxCached*3/4 {
			break
		}
		delete(c.m, k)
	}
}

func (c *cache) clear() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
