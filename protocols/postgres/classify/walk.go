package classify

import (
	"fmt"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// classifyNode classifies one top-level statement of a parse tree.
func classifyNode(n *pg_query.Node) Statement {
	m := unwrap(n)
	if m == nil {
		return Statement{Class: Admin, Base: Admin, Reason: "empty statement node"}
	}
	k, _ := kindOf(m)
	st := Statement{Class: k.class, Base: k.class, Tag: k.tag, TxControl: k.tx, Reason: k.reason, Deallocates: k.deallocate}

	if p, ok := m.Interface().(*pg_query.PrepareStmt); ok {
		inner := classifyNode(p.GetQuery())
		if inner.Prepared != nil { // the grammar allows no PREPARE of EXECUTE; refuse it if it ever parses
			inner.Class, inner.Reason = Admin, "PREPARE of a statement that uses a prepared statement"
		}
		st.Class, st.Reason = inner.Class, inner.Reason
		if inner.Class != Read {
			st.Reason = fmt.Sprintf("prepares %s: %s", inner.Tag, inner.Reason)
		}
		st.Prepared = &PreparedInfo{Name: p.GetName(), Statement: &inner}
		return st
	}

	w := walker{class: Read}
	w.visit(m)
	st.Class, st.Reason = w.class, w.reason
	if w.executes {
		st.Prepared = &PreparedInfo{Name: w.execName, Rest: w.class, restReason: w.reason}
		st.Class = Admin
		st.Reason = fmt.Sprintf("executes prepared statement %q, which the session must resolve", w.execName)
	}
	return st
}

// unwrap returns the message a Node holds, or nil.
func unwrap(n *pg_query.Node) protoreflect.Message {
	if n == nil {
		return nil
	}
	m := n.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("node")
	if od == nil {
		return nil
	}
	fd := m.WhichOneof(od)
	if fd == nil || fd.Message() == nil {
		return nil
	}
	return m.Get(fd).Message()
}

// walker visits every message of a statement's parse tree and keeps the
// strongest class found so far and the reason for it.
type walker struct {
	class    Class
	reason   string
	cte      int // how many CommonTableExprs enclose the current node
	executes bool
	execName string
}

// raise records class c when it is stronger than anything seen so far.
func (w *walker) raise(c Class, reason string) {
	if c.Rank() > w.class.Rank() {
		w.class, w.reason = c, reason
	}
}

// visit classifies m and then everything beneath it. The walk is generic
// (protobuf reflection over every populated message field), so a node kind
// the rules below do not name is still descended into: a function call or
// a data-modifying statement is found at any depth.
func (w *walker) visit(m protoreflect.Message) {
	switch x := m.Interface().(type) {
	case *pg_query.Node:
		// The oneof wrapper: descend into the message it holds.
	case *pg_query.FuncCall:
		if c, why := funcClass(x); c != Read {
			w.raise(c, why)
		}
	case *pg_query.LockingClause:
		w.raise(Write, "SELECT ... "+lockName(x.GetStrength())+" locks rows")
	case *pg_query.IntoClause:
		w.raise(DDL, "SELECT ... INTO creates a table")
	case *pg_query.CommonTableExpr:
		w.cte++
		w.children(m)
		w.cte--
		return
	case *pg_query.ExecuteStmt:
		w.executes, w.execName = true, x.GetName()
	case *pg_query.ExplainStmt:
		// EXPLAIN without ANALYZE only plans: nothing inside it runs.
		if explainAnalyzes(x) {
			if q := unwrap(x.GetQuery()); q != nil {
				w.visit(q)
			}
		}
		return
	case *pg_query.PrepareStmt:
		// Only reachable nested, which the grammar does not allow.
		w.raise(Admin, "nested PREPARE")
		return
	default:
		if k, ok := kindOf(m); ok && k.class != Read {
			reason := k.reason
			if w.cte > 0 && k.dml {
				reason = "data-modifying CTE: " + reason
			}
			w.raise(k.class, reason)
		}
	}
	w.children(m)
}

// children visits every populated message field of m.
func (w *walker) children(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				w.visit(l.Get(i).Message())
			}
			return true
		}
		w.visit(v.Message())
		return true
	})
}

// explainAnalyzes reports whether an EXPLAIN runs its statement: an analyze
// option that is not explicitly false.
func explainAnalyzes(x *pg_query.ExplainStmt) bool {
	for _, o := range x.GetOptions() {
		d := o.GetDefElem()
		if d == nil || !equalFold(d.GetDefname(), "analyze") {
			continue
		}
		if d.GetArg() == nil {
			return true
		}
		if v, ok := constValue(d.GetArg()); !ok || !isFalse(v) {
			return true
		}
	}
	return false
}

// lockName spells a row-locking strength as SQL does.
func lockName(s pg_query.LockClauseStrength) string {
	switch s {
	case pg_query.LockClauseStrength_LCS_FORKEYSHARE:
		return "FOR KEY SHARE"
	case pg_query.LockClauseStrength_LCS_FORSHARE:
		return "FOR SHARE"
	case pg_query.LockClauseStrength_LCS_FORNOKEYUPDATE:
		return "FOR NO KEY UPDATE"
	}
	return "FOR UPDATE"
}
