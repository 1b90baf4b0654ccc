package classify

import (
	"container/list"
	"strings"
	"sync"
	"sync/atomic"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// MaxCachedLen is the longest statement text a Classifier caches. Longer
// text is classified on every call, so that the cache's memory stays
// bounded by its size times this length.
const MaxCachedLen = 8 << 10

// MaxCacheBytes bounds the statement text each of a Classifier's caches
// holds, whatever its count: 10,000 long statements do not take 80 MB.
const MaxCacheBytes = 16 << 20

// constReads counts, in every goroutine, the classifier's reads of a
// constant's value (constValue). A classification during which it did not
// move read no constant, so it holds for every query of the same shape.
var constReads atomic.Uint64

// Classifier classifies statements through two bounded LRU caches, so that
// the parser (a cgo call and a protobuf decode) is not on the path of every
// query a client repeats:
//
//   - by exact statement text;
//   - by shape: the text with its constants replaced by $n
//     (pg_query.Normalize, about a tenth of a parse). A classification is
//     cached by shape only when it could not depend on any constant: the
//     shape itself (constants unknown) classifies exactly as the text did
//     and the classifier read no constant's value while classifying it.
//     SELECT ... WHERE id = 42 and id = 43 share one entry; SET and
//     set_config, whose constants decide their class, never do.
//
// It is safe for concurrent use.
type Classifier struct {
	exact, shape *lru
}

// New returns a Classifier that caches up to size classifications in each
// of its caches. A size of zero or less caches nothing.
func New(size int) *Classifier {
	return &Classifier{exact: newLRU(size), shape: newLRU(size)}
}

// Classify returns the classification of sql, from a cache when the same
// text, or a text of the same shape, was classified recently. The Result is
// the caller's own copy.
func (c *Classifier) Classify(sql string) Result {
	if c.exact.size <= 0 || len(sql) > MaxCachedLen {
		return Classify(sql)
	}
	if res, ok := c.exact.get(sql); ok {
		return res
	}
	norm, nerr := pg_query.Normalize(sql)
	shaped := nerr == nil && norm != sql && len(norm) <= MaxCachedLen
	if shaped {
		if res, ok := c.shape.get(norm); ok {
			return res
		}
	}
	res := Classify(sql)
	c.exact.put(sql, res)
	if shaped && res.Err == nil {
		before := constReads.Load()
		nres := Classify(norm)
		if constReads.Load() == before && sameClasses(res, nres) {
			c.shape.put(norm, res)
		}
	}
	return res
}

// sameClasses reports whether two classifications agree statement by
// statement on everything a decision looks at.
func sameClasses(a, b Result) bool {
	if a.Err != nil || b.Err != nil || len(a.Statements) != len(b.Statements) {
		return false
	}
	for i := range a.Statements {
		x, y := a.Statements[i], b.Statements[i]
		if x.Class != y.Class || x.Base != y.Base || x.Tag != y.Tag || x.TxControl != y.TxControl ||
			(x.Prepared == nil) != (y.Prepared == nil) || x.Deallocates != y.Deallocates {
			return false
		}
		if x.Prepared != nil && (x.Prepared.Name != y.Prepared.Name || x.Prepared.Rest != y.Prepared.Rest ||
			(x.Prepared.Statement == nil) != (y.Prepared.Statement == nil) ||
			x.Prepared.Statement != nil && x.Prepared.Statement.Class != y.Prepared.Statement.Class) {
			return false
		}
	}
	return true
}

// Len returns how many classifications the exact-text cache holds.
func (c *Classifier) Len() int { return c.exact.len() }

// ShapeLen returns how many classifications the shape cache holds.
func (c *Classifier) ShapeLen() int { return c.shape.len() }

// lru is a bounded cache of Results by key.
type lru struct {
	size  int
	bytes int // text held, bounded by MaxCacheBytes

	mu    sync.Mutex
	order *list.List // of *cacheEntry, most recently used first
	items map[string]*list.Element
}

type cacheEntry struct {
	key string
	res Result
}

func newLRU(size int) *lru {
	return &lru{size: size, order: list.New(), items: make(map[string]*list.Element)}
}

func (l *lru) get(key string) (Result, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.items[key]
	if !ok {
		return Result{}, false
	}
	l.order.MoveToFront(e)
	return e.Value.(*cacheEntry).res.clone(), true
}

func (l *lru) put(key string, res Result) {
	if l.size <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.items[key]; ok { // another caller got there first
		l.order.MoveToFront(e)
		return
	}
	key = strings.Clone(key) // do not pin the caller's buffer
	l.items[key] = l.order.PushFront(&cacheEntry{key: key, res: res.clone()})
	l.bytes += len(key)
	for l.order.Len() > l.size || l.bytes > MaxCacheBytes {
		last := l.order.Back()
		l.order.Remove(last)
		k := last.Value.(*cacheEntry).key
		delete(l.items, k)
		l.bytes -= len(k)
	}
}

func (l *lru) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}
