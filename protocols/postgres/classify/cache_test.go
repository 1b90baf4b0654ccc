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
	c.Classify("select 2") // evicts nextval, the least recently used
	if got := c.Len(); got != 2 {
		t.Errorf("got %d entries, want 2", got)
	}
	c.mu.Lock()
	_, kept := c.items["select nextval('s')"]
	c.mu.Unlock()
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
