package classify

import (
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func tagsOf(r Result) string {
	tags := make([]string, len(r.Statements))
	for i, s := range r.Statements {
		tags[i] = s.Tag
	}
	return strings.Join(tags, ";")
}

func TestClassifyCorpus(t *testing.T) {
	if len(corpus) < 80 {
		t.Fatalf("corpus has %d statements, want at least 80", len(corpus))
	}
	for sql, w := range corpus {
		t.Run(sql, func(t *testing.T) {
			r := Classify(sql)
			if r.Err != nil {
				t.Fatalf("got error %v, want class %s", r.Err, w.class)
			}
			if got := r.Class(); got != w.class {
				t.Errorf("got class %s, want %s (reasons: %v)", got, w.class, reasons(r))
			}
			if got := tagsOf(r); got != w.tags {
				t.Errorf("got tags %q, want %q", got, w.tags)
			}
			for _, s := range r.Statements {
				if s.Class.Rank() < s.Base.Rank() {
					t.Errorf("%s: got class %s below its base %s", s.Tag, s.Class, s.Base)
				}
				if s.Class != Read && s.Reason == "" {
					t.Errorf("%s: class %s has no reason", s.Tag, s.Class)
				}
				if s.TxControl && s.Class != Read {
					t.Errorf("%s: transaction control with class %s, want read", s.Tag, s.Class)
				}
			}
		})
	}
}

func reasons(r Result) []string {
	var out []string
	for _, s := range r.Statements {
		out = append(out, s.Reason)
	}
	return out
}

func TestDetails(t *testing.T) {
	tests := map[string]struct {
		sql       string
		class     Class
		base      Class
		txControl bool
		reason    string // substring
	}{
		"nextval in a select": {
			sql: "select nextval('s')", class: Write, base: Read, reason: "calls nextval",
		},
		"data-modifying CTE": {
			sql: "with x as (delete from t returning *) select * from x", class: Write, base: Read, reason: "data-modifying CTE",
		},
		"row lock": {
			sql: "select * from t for update", class: Write, base: Write, reason: "FOR UPDATE",
		},
		"terminate backend": {
			sql: "select pg_terminate_backend(1)", class: Admin, base: Read, reason: "calls pg_terminate_backend",
		},
		"begin is transaction control": {
			sql: "begin", class: Read, base: Read, txControl: true,
		},
		"begin read write is not": {
			sql: "begin read write", class: Admin, base: Admin, reason: "READ WRITE",
		},
		"set_config with a read-only setting": {
			sql: "select set_config('transaction_read_only', 'off', true)", class: Admin, base: Read, reason: "set_config",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := Classify(tc.sql)
			if r.Err != nil || len(r.Statements) != 1 {
				t.Fatalf("got %d statements, error %v; want 1 statement", len(r.Statements), r.Err)
			}
			s := r.Statements[0]
			if s.Class != tc.class || s.Base != tc.base || s.TxControl != tc.txControl {
				t.Errorf("got class %s base %s txControl %v, want %s %s %v", s.Class, s.Base, s.TxControl, tc.class, tc.base, tc.txControl)
			}
			if !strings.Contains(s.Reason, tc.reason) {
				t.Errorf("got reason %q, want it to contain %q", s.Reason, tc.reason)
			}
		})
	}
}

func TestPrepareAndExecute(t *testing.T) {
	prep := Classify("prepare p as delete from t where id = $1").Statements[0]
	if prep.Tag != "PREPARE" || prep.Class != Write || prep.Base != Read {
		t.Fatalf("got PREPARE tag %q class %s base %s, want PREPARE write read", prep.Tag, prep.Class, prep.Base)
	}
	if prep.Prepared == nil || prep.Prepared.Name != "p" || prep.Prepared.Statement == nil {
		t.Fatalf("got Prepared %+v, want name p with the inner statement", prep.Prepared)
	}
	if prep.Executes() {
		t.Errorf("got PREPARE Executes true, want false")
	}
	inner := *prep.Prepared.Statement
	if inner.Tag != "DELETE" || inner.Class != Write {
		t.Errorf("got inner tag %q class %s, want DELETE write", inner.Tag, inner.Class)
	}
	readQ := *Classify("prepare q as select * from t").Statements[0].Prepared.Statement

	tests := map[string]struct {
		sql      string
		prepared Statement
		class    Class
		tag      string
	}{
		"execute a prepared delete": {sql: "execute p(1)", prepared: inner, class: Write, tag: "DELETE"},
		"execute a prepared select": {sql: "execute q", prepared: readQ, class: Read, tag: "SELECT"},
		"write in the parameters":   {sql: "execute q(nextval('s'))", prepared: readQ, class: Write, tag: "SELECT"},
		"explain analyze execute":   {sql: "explain analyze execute p(1)", prepared: inner, class: Write, tag: "EXPLAIN"},
		"create table as execute":   {sql: "create table x as execute q", prepared: readQ, class: DDL, tag: "CREATE TABLE AS"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := Classify(tc.sql).Statements[0]
			if !s.Executes() || s.Class != Admin {
				t.Fatalf("got unresolved Executes %v class %s, want true admin", s.Executes(), s.Class)
			}
			got := s.Resolve(tc.prepared)
			if got.Class != tc.class || got.Tag != tc.tag {
				t.Errorf("got class %s tag %q, want %s %q", got.Class, got.Tag, tc.class, tc.tag)
			}
			if got.Executes() {
				t.Errorf("got resolved Executes true, want false")
			}
			if again := got.Resolve(Statement{Class: Admin}); again.Class != got.Class {
				t.Errorf("got class %s after resolving twice, want %s", again.Class, got.Class)
			}
		})
	}
	if got := Classify("explain execute p").Class(); got != Read {
		t.Errorf("got EXPLAIN EXECUTE class %s, want read", got)
	}
}

func TestRefused(t *testing.T) {
	tests := map[string]string{
		"syntax error":      "selec 1",
		"unterminated":      "select 'abc",
		"NUL byte":          "select 1\x00; delete from t",
		"invalid UTF-8":     "select '\xff'; delete from t",
		"half a statement":  "delete",
		"open comment":      "select 1 /* ; delete from t",
		"open dollar quote": "select $$; delete from t",
	}
	for name, sql := range tests {
		t.Run(name, func(t *testing.T) {
			r := Classify(sql)
			if r.Err == nil {
				t.Fatalf("got no error, want one (class %s)", r.Class())
			}
			if r.Class() != Admin {
				t.Errorf("got class %s for an error, want admin", r.Class())
			}
		})
	}
}

// TestEveryStatementTypeIsKnown makes sure each statement node the parser
// can produce has a deliberate rule, so that a parser upgrade adding one
// shows up here rather than as an accidental admin.
func TestEveryStatementTypeIsKnown(t *testing.T) {
	nodeFields := (&pg_query.Node{}).ProtoReflect().Descriptor().Fields()
	n := 0
	for i := 0; i < nodeFields.Len(); i++ {
		md := nodeFields.Get(i).Message()
		if md == nil || !strings.HasSuffix(string(md.Name()), "Stmt") {
			continue
		}
		switch md.Name() {
		case "RawStmt", "PLAssignStmt": // never a statement of a parsed query
			continue
		}
		n++
		msg := (&pg_query.Node{}).ProtoReflect().NewField(nodeFields.Get(i)).Message()
		k, ok := kindOf(msg)
		if !ok || strings.HasPrefix(k.reason, "unrecognised statement type") {
			t.Errorf("%s has no rule", md.Name())
		}
	}
	if n < 100 {
		t.Errorf("got %d statement types, want over 100", n)
	}
	var unknown protoreflect.Message = (&pg_query.PLAssignStmt{}).ProtoReflect()
	if k, ok := kindOf(unknown); !ok || k.class != Admin {
		t.Errorf("got unknown statement kind %+v, want admin", k)
	}
}

func TestRank(t *testing.T) {
	order := []Class{Read, Write, DDL, Admin}
	for i := 1; i < len(order); i++ {
		if order[i-1].Rank() >= order[i].Rank() {
			t.Errorf("got %s rank %d >= %s rank %d", order[i-1], order[i-1].Rank(), order[i], order[i].Rank())
		}
	}
	if got := Class("bogus").Rank(); got != Admin.Rank() {
		t.Errorf("got unknown class rank %d, want admin's %d", got, Admin.Rank())
	}
}
