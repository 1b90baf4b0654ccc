package classify

import (
	"strings"
	"testing"
)

// smuggled are writes the fuzz target appends to every input that parses:
// whatever precedes them, the result must not be all read.
var smuggled = []string{
	"delete from t",
	"insert into t values (1)",
	"select nextval('s')",
	"set default_transaction_read_only = off",
	"with x as (update t set a = 1 returning *) select * from x",
}

// keywordLed are statements whose first words already make them not read:
// every prefix of them must be an error or not read either.
var keywordLed = []string{
	"delete from t where id = 1",
	"insert into t (a) values (1)",
	"update t set a = 1 where id = 2",
	"merge into t using u on t.id = u.id when matched then delete",
	"truncate table t",
	"drop table t",
	"create temp table x (a int)",
	"copy t from stdin",
	"copy t to program 'x'",
	"do $$begin delete from t; end$$",
	"call p(1)",
	"alter system set work_mem = '1GB'",
	"grant select on t to bob",
	"explain analyze delete from t",
	"prepare p as delete from t",
	"set session authorization postgres",
	"set role postgres",
	"with x as (delete from t returning *) select * from x",
}

func FuzzClassify(f *testing.F) {
	for sql := range corpus {
		f.Add(sql)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		r := Classify(sql)
		if r.Err == errInternal {
			t.Fatalf("classifier panicked on %q", sql)
		}
		if r.Err != nil {
			return
		}
		for _, s := range r.Statements {
			if s.Class.Rank() < s.Base.Rank() {
				t.Fatalf("%q: got class %s below base %s", sql, s.Class, s.Base)
			}
			if s.TxControl && s.Class != Read {
				t.Fatalf("%q: got transaction control of class %s", sql, s.Class)
			}
		}
		if r.Class() == Read {
			again := Classify(sql)
			if again.Err != nil || again.Class() != Read || tagsOf(again) != tagsOf(r) {
				t.Fatalf("%q: got %s %q, then %s %q (error %v)", sql, r.Class(), tagsOf(r), again.Class(), tagsOf(again), again.Err)
			}
		}
		for _, w := range smuggled {
			q := sql + "\n;\n" + w // the newline ends a trailing -- comment
			if got := Classify(q); got.Err == nil && got.Class() == Read {
				t.Fatalf("%q: got read", q)
			}
		}
	})
}

// TestTruncation classifies every prefix of every corpus statement. Unlike
// most parsers' inputs, a prefix of SQL is often valid SQL of its own
// ("select 1" of "select 10"), so the test asks that no prefix panics, and
// that no prefix of a statement whose leading words make it not read
// classifies as read.
func TestTruncation(t *testing.T) {
	for sql := range corpus {
		for i := 0; i < len(sql); i++ {
			if r := Classify(sql[:i]); r.Err == errInternal {
				t.Fatalf("classifier panicked on %q", sql[:i])
			}
		}
	}
	for _, sql := range keywordLed {
		if c := Classify(sql).Class(); c == Read {
			t.Fatalf("%q: got read for the whole statement", sql)
		}
		for i := 0; i < len(sql); i++ {
			p := sql[:i]
			if strings.TrimSpace(p) == "" {
				continue // nothing at all runs
			}
			if r := Classify(p); r.Err == nil && r.Class() == Read {
				t.Errorf("prefix %q of %q: got read, want an error or a stronger class", p, sql)
			}
		}
	}
}
