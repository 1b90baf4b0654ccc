package policy

import (
	"strconv"
	"strings"

	"github.com/postern/postern/protocols"
)

// classSet is a set of statement classes, one bit per class.
type classSet uint8

const (
	readBit classSet = 1 << iota
	writeBit
	ddlBit
	adminBit
)

// classBit returns the bit of class c. A class that is none of the four
// ranks as admin, so that only a list with admin allows it.
func classBit(c string) classSet {
	switch c {
	case ClassRead:
		return readBit
	case ClassWrite:
		return writeBit
	case ClassDDL:
		return ddlBit
	}
	return adminBit
}

// className is the class of a single bit, as classBit names it.
func className(b classSet) string {
	switch b {
	case readBit:
		return ClassRead
	case writeBit:
		return ClassWrite
	case ddlBit:
		return ClassDDL
	}
	return ClassAdmin
}

// readOnlyTag reports whether a statement with command tag t, matched by
// tag (so nothing nested in it raised its class), only reads. The set is
// small and explicit: a tag missing here only costs a session its
// server-side read-only mode, never a statement.
func readOnlyTag(t string) bool {
	switch t {
	case "SELECT", "VALUES", "TABLE", "SHOW", "EXPLAIN",
		"DECLARE CURSOR", "FETCH", "MOVE", "CLOSE", "CLOSE CURSOR", "CLOSE CURSOR ALL",
		"PREPARE", "EXECUTE", "DEALLOCATE", "DEALLOCATE ALL",
		"LISTEN", "UNLISTEN", "DISCARD PLANS", "DISCARD SEQUENCES",
		"SET", "RESET":
		return true
	}
	return false
}

// compile derives what decisions need from the section as written.
func (p *PostgresRule) compile() {
	p.classes = 0
	for _, c := range p.Classes {
		p.classes |= classBit(c)
	}
	p.readOnly = p.Statements != nil && p.classes&^readBit == 0
	for _, t := range p.Tags {
		if !readOnlyTag(t) {
			p.readOnly = false
		}
	}
}

// ReadOnly reports whether the section allows only statements that read:
// it has a statements list whose classes are only read and whose command
// tags are all tags of statements that only read (SELECT, SHOW, FETCH…).
func (p *PostgresRule) ReadOnly() bool { return p.readOnly }

// admits reports whether the section lets a session use database db as
// role user.
func (p *PostgresRule) admits(db, user string) bool {
	return p.MatchDatabase(db) && p.MatchUser(user)
}

// allows reports whether an allow rule's section allows the statement of
// class c: every statement when it has no statements list, transaction
// control always, otherwise a listed class, or a listed tag when the tag
// alone says what the statement does.
func (p *PostgresRule) allows(pg *protocols.PostgresRequest, c classSet) bool {
	return p.Statements == nil || pg.TxControl || p.classes&c != 0 ||
		pg.TagExact && hasTag(p.Tags, pg.Tag)
}

// refuses reports whether a deny rule's section, with a statements list,
// refuses the statement of class c: a listed tag, whether or not anything
// nested raised the statement's class, or a listed class. Transaction
// control is in every class, so a class never refuses it; only its tag
// does.
func (p *PostgresRule) refuses(pg *protocols.PostgresRequest, c classSet) bool {
	return hasTag(p.Tags, pg.Tag) || !pg.TxControl && p.classes&c != 0
}

func hasTag(tags []string, t string) bool {
	if t == "" {
		return false
	}
	for _, x := range tags {
		if x == t {
			return true
		}
	}
	return false
}

// authorizePostgres decides a Postgres session's startup or one of its
// statements; see Authorize.
func (p *Policy) authorizePostgres(r protocols.Request) protocols.Decision {
	if r.Postgres.Startup {
		return p.authorizeSession(r)
	}
	return p.authorizeStatement(r)
}

func (p *Policy) authorizeSession(r protocols.Request) protocols.Decision {
	pg := r.Postgres
	for _, rule := range p.pgDenies {
		if !rule.Applies(r) {
			continue
		}
		sec := rule.Postgres
		if sec == nil {
			return protocols.Decision{Rule: rule.Name, Reason: ReasonDenied}
		}
		if sec.Statements == nil && sec.admits(pg.Database, pg.User) {
			return protocols.Decision{Rule: rule.Name, Reason: sessionDenied(pg)}
		}
	}
	var first *Rule
	applied := false
	readOnly := true
	for _, rule := range p.allows {
		if !rule.Applies(r) {
			continue
		}
		applied = true
		sec := rule.Postgres
		if sec != nil && !sec.admits(pg.Database, pg.User) {
			continue
		}
		if first == nil {
			first = rule
		}
		if sec == nil || !sec.readOnly {
			readOnly = false
			break
		}
	}
	if first == nil {
		return p.postgresDefaultDeny(r, applied)
	}
	return protocols.Decision{Allow: true, Rule: first.Name, Reason: ReasonAllowed, ReadOnly: readOnly}
}

func (p *Policy) authorizeStatement(r protocols.Request) protocols.Decision {
	pg := r.Postgres
	class := classBit(pg.Class)
	for _, rule := range p.pgDenies {
		if !rule.Applies(r) {
			continue
		}
		sec := rule.Postgres
		switch {
		case sec == nil:
			return protocols.Decision{Rule: rule.Name, Reason: ReasonDenied}
		case !sec.admits(pg.Database, pg.User):
		case sec.Statements == nil:
			return protocols.Decision{Rule: rule.Name, Reason: sessionDenied(pg)}
		case sec.refuses(pg, class):
			return protocols.Decision{Rule: rule.Name, Reason: statement(pg, class) + " is denied by rule"}
		}
	}
	var limit *Rule // the first rule that admits the session but not the statement
	applied := false
	for _, rule := range p.allows {
		if !rule.Applies(r) {
			continue
		}
		applied = true
		sec := rule.Postgres
		if sec == nil {
			return protocols.Decision{Allow: true, Rule: rule.Name, Reason: ReasonAllowed}
		}
		if !sec.admits(pg.Database, pg.User) {
			continue
		}
		if sec.allows(pg, class) {
			return protocols.Decision{Allow: true, Rule: rule.Name, Reason: ReasonAllowed}
		}
		if limit == nil {
			limit = rule
		}
	}
	if limit == nil {
		return p.postgresDefaultDeny(r, applied)
	}
	return protocols.Decision{
		Rule: limit.Name,
		Reason: statement(pg, class) + " is not allowed by rule " + strconv.Quote(limit.Name) +
			", which allows " + strings.Join(limit.Postgres.Statements, ", "),
	}
}

// postgresDefaultDeny is the decision no rule made: applied says whether
// some allow rule applied to the identity and service, only not to the
// session's database and role.
func (p *Policy) postgresDefaultDeny(r protocols.Request, applied bool) protocols.Decision {
	if !applied {
		return defaultDeny(r)
	}
	return protocols.Decision{
		Rule: protocols.DefaultDeny,
		Reason: "no rule lets " + identity(r) + " use database " + strconv.Quote(r.Postgres.Database) +
			" as role " + strconv.Quote(r.Postgres.User),
	}
}

// sessionDenied is the reason of a deny rule that refuses a session.
func sessionDenied(pg *protocols.PostgresRequest) string {
	return "database " + strconv.Quote(pg.Database) + " as role " + strconv.Quote(pg.User) + " is denied by rule"
}

// statement describes a statement in reasons: `statement class "write"
// (INSERT)`. The class is the one it was judged as.
func statement(pg *protocols.PostgresRequest, class classSet) string {
	s := "statement class " + strconv.Quote(className(class))
	if pg.Tag != "" {
		s += " (" + pg.Tag + ")"
	}
	return s
}
