package classify

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestClassifierCaches(t *testing.T) {
	c := New(2)
	first := c.Classify("select nextval('s')")
	if got := first.Class(); got != Write {
		t.Fatalf("got class %s, want write", got)
	}
	first.Statements[0].Class = Read // the caller's copy, not the cache's
	if got := c.Classify("select nextval('s')").Class(); got != Write {
		t.Errorf("got cached class %s after the caller changed its copy, want write", got)
	}
	c.Classify("select 1")
	c.Classify("select 2 from pg_class") // evicts nextval, the least recently used
	if got := c.Len(); got != 2 {
		t.Errorf("got %d entries, want 2", got)
	}
	c.exact.mu.Lock()
	_, kept := c.exact.items["select nextval('s')"]
	c.exact.mu.Unlock()
	if kept {
		t.Errorf("got the least recently used entry kept, want it evicted")
	}
}

func TestClassifierPreparedCopy(t *testing.T) {
	c := New(8)
	r := c.Classify("prepare p as delete from t")
	r.Statements[0].Prepared.Statement.Class = Read
	r.Statements[0].Prepared.Name = "x"
	again := c.Classify("prepare p as delete from t").Statements[0]
	if again.Prepared.Statement.Class != Write || again.Prepared.Name != "p" {
		t.Errorf("got cached prepared %s %q, want write \"p\"", again.Prepared.Statement.Class, again.Prepared.Name)
	}
}

func TestClassifierErrorsAndLimits(t *testing.T) {
	tests := map[string]struct {
		size   int
		sql    string
		cached bool
	}{
		"parse error is cached":   {size: 4, sql: "selec 1", cached: true},
		"no cache":                {size: 0, sql: "select 1", cached: false},
		"long text is not cached": {size: 4, sql: "select '" + strings.Repeat("x", MaxCachedLen) + "'", cached: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := New(tc.size)
			want := Classify(tc.sql)
			got := c.Classify(tc.sql)
			if (got.Err == nil) != (want.Err == nil) || got.Class() != want.Class() {
				t.Errorf("got %s (error %v), want %s (error %v)", got.Class(), got.Err, want.Class(), want.Err)
			}
			if cached := c.Len() == 1; cached != tc.cached {
				t.Errorf("got cached %v, want %v", cached, tc.cached)
			}
		})
	}
}

func TestClassifierConcurrent(t *testing.T) {
	c := New(16)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				sql := fmt.Sprintf("select %d; delete from t where id = %d", i%24, i%24)
				if got := c.Classify(sql).Class(); got != Write {
					t.Errorf("%q: got %s, want write", sql, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := c.Len(); got > 16 {
		t.Errorf("got %d entries, want at most 16", got)
	}
}

// TestClassifierShapes: queries that differ only in constants share a
// shape entry, unless a constant decides the class.
func TestClassifierShapes(t *testing.T) {
	tests := map[string]struct {
		first, second string
		want          Class
		shared        bool
	}{
		"constants in a read":     {"select * from t where id = 1", "select * from t where id = 2", Read, true},
		"constants in a write":    {"insert into t values (1, 'a')", "insert into t values (2, 'b')", Write, true},
		"nextval by name":         {"select nextval('a')", "select nextval('b')", Write, true},
		"set_config decides":      {"select set_config('search_path', 'x', false)", "select set_config('default_transaction_read_only', 'off', false)", Admin, false},
		"set_config reverse":      {"select set_config('default_transaction_read_only', 'off', false)", "select set_config('search_path', 'x', false)", Read, false},
		"explain analyze option":  {"explain (analyze false) delete from t", "explain (analyze true) delete from t", Write, false},
		"set value decides":       {"set default_transaction_read_only = on", "set default_transaction_read_only = off", Admin, false},
		"string hides no command": {"select 'a'; select 1", "select 'b''; delete from t; --'; select 1", Read, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := New(16)
			c.Classify(tc.first)
			shapes := c.ShapeLen()
			got := c.Classify(tc.second)
			if got.Class() != tc.want {
				t.Fatalf("got %s for %q, want %s", got.Class(), tc.second, tc.want)
			}
			if direct := Classify(tc.second).Class(); got.Class() != direct {
				t.Fatalf("cached %s, uncached %s", got.Class(), direct)
			}
			if tc.shared && (shapes != 1 || c.ShapeLen() != 1) {
				t.Errorf("got %d then %d shape entries, want one shared", shapes, c.ShapeLen())
			}
		})
	}
}

// TestClassifierByteBudget: long statements are evicted by their size
// before the count is reached.
func TestClassifierByteBudget(t *testing.T) {
	c := New(100000)
	n := MaxCacheBytes/(MaxCachedLen-100) + 10
	for i := range n {
		c.Classify(fmt.Sprintf("select '%s' as c%d", strings.Repeat("x", MaxCachedLen-120), i))
	}
	if got := c.ShapeLen(); got != n {
		t.Fatalf("got %d shapes, want %d: the test needs distinct statements", got, n)
	}
	if got := c.Len(); got >= n {
		t.Fatalf("got %d entries of ~8 KiB, want fewer than %d (a %d-byte budget)", got, n, MaxCacheBytes)
	}
	c.exact.mu.Lock()
	b := c.exact.bytes
	c.exact.mu.Unlock()
	if b > MaxCacheBytes {
		t.Fatalf("cache holds %d bytes, over its budget of %d", b, MaxCacheBytes)
	}
}
