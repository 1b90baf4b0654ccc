package classify

import (
	"container/list"
	"strings"
	"sync"
)

// MaxCachedLen is the longest statement text a Classifier caches. Longer
// text is classified on every call, so that the cache's memory stays
// bounded by its size times this length.
const MaxCachedLen = 8 << 10

// Classifier classifies statements through a bounded LRU cache keyed by the
// statement text, so that the parser is not on the path of every query a
// client repeats. It is safe for concurrent use.
type Classifier struct {
	size int

	mu    sync.Mutex
	order *list.List // of *cacheEntry, most recently used first
	items map[string]*list.Element
}

type cacheEntry struct {
	sql string
	res Result
}

// New returns a Classifier that caches up to size classifications. A size
// of zero or less caches nothing.
func New(size int) *Classifier {
	return &Classifier{size: size, order: list.New(), items: make(map[string]*list.Element)}
}

// Classify returns the classification of sql, from the cache when the same
// text was classified recently. The Result is the caller's own copy.
func (c *Classifier) Classify(sql string) Result {
	if c.size <= 0 || len(sql) > MaxCachedLen {
		return Classify(sql)
	}
	c.mu.Lock()
	if e, ok := c.items[sql]; ok {
		c.order.MoveToFront(e)
		res := e.Value.(*cacheEntry).res
		c.mu.Unlock()
		return res.clone()
	}
	c.mu.Unlock()

	res := Classify(sql)

	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[sql]; ok { // another caller got there first
		c.order.MoveToFront(e)
		return res
	}
	key := strings.Clone(sql) // do not pin the caller's buffer
	c.items[key] = c.order.PushFront(&cacheEntry{sql: key, res: res.clone()})
	for c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).sql)
	}
	return res
}

// Len returns how many classifications the cache holds.
func (c *Classifier) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
