package classify

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Class is what a statement may do: read, write, ddl or admin.
type Class string

// The four statement classes of a policy's postgres.statements list.
const (
	Read  Class = "read"
	Write Class = "write"
	DDL   Class = "ddl"
	Admin Class = "admin"
)

// Rank orders the classes read < write < ddl < admin, so that the strongest
// class of a multi-statement query is the one with the highest rank. A class
// that is none of the four ranks as admin.
func (c Class) Rank() int {
	switch c {
	case Read:
		return 0
	case Write:
		return 1
	case DDL:
		return 2
	}
	return 3
}

// Stronger returns whichever of c and d has the higher rank (c on a tie).
func (c Class) Stronger(d Class) Class {
	if d.Rank() > c.Rank() {
		return d
	}
	return c
}

// Statement is the classification of one statement of a query string.
type Statement struct {
	// Class is the strongest class of anything the statement does, including
	// everything nested inside it (CTEs, subqueries, function calls...).
	Class Class
	// Base is the class the kind of statement alone implies, before anything
	// nested inside raised it: `SELECT nextval('s')` has Tag "SELECT", Base
	// read and Class write. A policy that allows statements by command tag
	// should match only when Class == Base, so that listing SELECT does not
	// also allow every side effect a SELECT can call.
	Base Class
	// Tag is the command tag as Postgres reports it: "SELECT", "INSERT",
	// "CREATE TABLE", "BEGIN", "SELECT FOR UPDATE", "SELECT INTO"...
	Tag string
	// TxControl marks BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK, ABORT,
	// SAVEPOINT, RELEASE and ROLLBACK TO, which every class allows. Their
	// Class is read. BEGIN/START TRANSACTION READ WRITE is admin and not
	// TxControl, and neither is two-phase commit (PREPARE TRANSACTION,
	// COMMIT PREPARED, ROLLBACK PREPARED), which is admin.
	TxControl bool
	// Reason says why the statement has its Class when that is not read,
	// e.g. "calls pg_terminate_backend" or "data-modifying CTE: DELETE
	// changes rows".
	Reason string
	// Prepared is set for PREPARE and for statements that execute a
	// prepared statement; see PreparedInfo.
	Prepared *PreparedInfo
	// Deallocates names the prepared statement a DEALLOCATE removes
	// (empty for DEALLOCATE ALL, whose Tag says so).
	Deallocates string
}

// Setting classifies setting a configuration parameter to value, as a
// startup parameter or the options of a connection do: like SET name TO
// value. Its Tag is "SET".
func Setting(name, value string) Statement {
	c, reason := settingClass(name, &value)
	return Statement{Class: c, Base: Read, Tag: "SET", Reason: reason}
}

// PreparedInfo links a statement to a named prepared statement.
//
// A PREPARE carries the name and the classification of the query it
// prepares (Statement); its own Class is that query's Class and its Base is
// read. A statement that executes a prepared statement (EXECUTE name,
// EXPLAIN ANALYZE EXECUTE name, CREATE TABLE AS EXECUTE name) carries the
// name, a nil Statement and, in Rest, the strongest class of everything else
// in it (the EXECUTE parameters, what surrounds the EXECUTE); its Class is
// admin until the caller resolves it with Statement.Resolve.
//
// Which statement a name means is session state: the caller keeps a map from
// name to the PREPARE's Prepared.Statement, adds to it in statement order
// (a PREPARE earlier in the same query string counts), removes names on
// DEALLOCATE and clears it on DEALLOCATE ALL and DISCARD ALL. Statements
// prepared with the extended protocol's Parse message are classified from
// the Parse message's query text by the caller in the same way.
type PreparedInfo struct {
	Name      string
	Statement *Statement
	Rest      Class

	restReason string // why Rest is what it is
}

// Executes reports whether s runs a statement prepared earlier in the
// session and has not yet been resolved.
func (s Statement) Executes() bool {
	return s.Prepared != nil && s.Prepared.Statement == nil && s.Tag != "PREPARE"
}

// Resolve folds the classification of the prepared statement s executes
// into s: Class becomes the stronger of prepared.Class and the rest of s.
// A bare EXECUTE takes the prepared statement's Tag and Base, so that a
// policy sees EXECUTE of a prepared SELECT as a SELECT. Resolve returns s
// unchanged when s does not execute a prepared statement.
func (s Statement) Resolve(prepared Statement) Statement {
	if !s.Executes() {
		return s
	}
	p := prepared
	p.Prepared = nil
	rest := s.Prepared.Rest
	out := s
	out.Prepared = &PreparedInfo{Name: s.Prepared.Name, Statement: &p, Rest: rest}
	out.TxControl = false
	if s.Tag == "EXECUTE" {
		out.Tag, out.Base = p.Tag, p.Base
	}
	out.Class = rest.Stronger(p.Class)
	if p.Class.Rank() >= rest.Rank() {
		out.Reason = p.Reason
		if p.Class != Read {
			out.Reason = fmt.Sprintf("executes prepared %s: %s", p.Tag, p.Reason)
		}
	} else {
		out.Reason = s.Prepared.restReason
	}
	return out
}

// Result is the classification of a whole query string.
type Result struct {
	// Statements holds one classification per statement, in order. An empty
	// query string (or one holding only comments and semicolons) has none.
	Statements []Statement
	// Err is set when the text does not parse. Such text must be forwarded
	// only for an identity that may run everything (fail closed).
	Err error
}

// Class is the strongest class among r's statements: admin when r.Err is
// set, read when there are no statements. A multi-statement query is allowed
// only if every statement is, and a policy allowing this class allows them
// all.
func (r Result) Class() Class {
	if r.Err != nil {
		return Admin
	}
	c := Read
	for _, s := range r.Statements {
		c = c.Stronger(s.Class)
	}
	return c
}

// clone copies r deeply enough that a caller changing it cannot change the
// cached copy.
func (r Result) clone() Result {
	if len(r.Statements) == 0 {
		return r
	}
	out := Result{Statements: make([]Statement, len(r.Statements)), Err: r.Err}
	copy(out.Statements, r.Statements)
	for i := range out.Statements {
		if p := out.Statements[i].Prepared; p != nil {
			pc := *p
			if p.Statement != nil {
				sc := *p.Statement
				pc.Statement = &sc
			}
			out.Statements[i].Prepared = &pc
		}
	}
	return out
}

// errInternal marks a classifier bug caught by Classify's recover; the
// statement is refused like one that does not parse.
var errInternal = errors.New("classifying statement: internal error")

// Classify parses sql with the Postgres parser and classifies every
// statement in it. Text holding a NUL byte or invalid UTF-8 is an error:
// the server would read it differently from the parser.
func Classify(sql string) (res Result) {
	if strings.IndexByte(sql, 0) >= 0 {
		return Result{Err: errors.New("classifying statement: text contains a NUL byte")}
	}
	if !utf8.ValidString(sql) {
		return Result{Err: errors.New("classifying statement: text is not valid UTF-8")}
	}
	defer func() {
		if recover() != nil {
			res = Result{Err: errInternal}
		}
	}()
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return Result{Err: fmt.Errorf("parsing statement: %w", err)}
	}
	stmts := make([]Statement, 0, len(tree.GetStmts()))
	for _, raw := range tree.GetStmts() {
		stmts = append(stmts, classifyNode(raw.GetStmt()))
	}
	return Result{Statements: stmts}
}
