package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/gateway/store"
)

// IndexSessions implements store.Store. Every session needs an ID; a
// session already indexed is replaced wholesale.
func (d *DB) IndexSessions(ctx context.Context, ss []store.Session) (err error) {
	for _, s := range ss {
		if s.ID == "" {
			return errors.New("indexing sessions: empty session id")
		}
	}
	if len(ss) == 0 {
		return nil
	}
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("indexing sessions: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	stmt, err := tx.PrepareContext(ctx,
		`INSERT INTO sessions (id, identity, source, service, protocol, agent, transport,
		   db_name, db_user, start_at, end_at, bytes_in, bytes_out, outcome, events, denies, status, identities)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
		 ON CONFLICT (id) DO UPDATE SET
		   identity  = excluded.identity,
		   identities = excluded.identities,
		   source    = excluded.source,
		   service   = excluded.service,
		   protocol  = excluded.protocol,
		   agent     = excluded.agent,
		   transport = excluded.transport,
		   db_name   = excluded.db_name,
		   db_user   = excluded.db_user,
		   start_at  = excluded.start_at,
		   end_at    = excluded.end_at,
		   bytes_in  = excluded.bytes_in,
		   bytes_out = excluded.bytes_out,
		   outcome   = excluded.outcome,
		   events    = excluded.events,
		   denies    = excluded.denies,
		   status    = excluded.status`)
	if err != nil {
		return fmt.Errorf("indexing sessions: %w", err)
	}
	defer stmt.Close()
	for _, s := range ss {
		if _, err = stmt.ExecContext(ctx,
			s.ID, s.Identity, s.Source, s.Service, s.Protocol, s.Agent, s.Transport,
			s.Database, s.DBUser, zeroMicros(s.Start), zeroMicros(s.End), s.BytesIn, s.BytesOut,
			s.Outcome, s.Events, s.Denies, s.Status, strings.Join(s.Identities, "\n")); err != nil {
			return fmt.Errorf("indexing session %s: %w", s.ID, err)
		}
	}
	// A row written now is current: its session needs no rescan.
	if d.schema >= rescanVersion {
		del, perr := tx.PrepareContext(ctx, `DELETE FROM sessions_rescan WHERE id = $1`)
		if perr != nil {
			err = perr
			return fmt.Errorf("indexing sessions: %w", err)
		}
		defer del.Close()
		for _, s := range ss {
			if _, err = del.ExecContext(ctx, s.ID); err != nil {
				return fmt.Errorf("indexing session %s: %w", s.ID, err)
			}
		}
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("indexing sessions: %w", err)
	}
	return nil
}

// SessionsToRescan returns the ids of the sessions whose rows are to be
// made again from their recordings, in id order.
func (d *DB) SessionsToRescan(ctx context.Context) ([]string, error) {
	if d.schema < rescanVersion {
		return nil, nil
	}
	rows, err := d.db.QueryContext(ctx, `SELECT id FROM sessions_rescan ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("listing sessions to rescan: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("listing sessions to rescan: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing sessions to rescan: %w", err)
	}
	return ids, nil
}

const (
	sessionColumns = `SELECT id, identity, source, service, protocol, agent, transport,
		   db_name, db_user, start_at, end_at, bytes_in, bytes_out, outcome, events, denies, status, `
	sessionOrder = ` ORDER BY start_at DESC, id`
	// identitiesVersion is the schema version that added identities.
	identitiesVersion = 4
	// rescanVersion is the schema version that added sessions_rescan.
	rescanVersion = 5
)

// columns is the SELECT of a session row from the FROM clause on; in a
// file of a schema without identities, they read as empty.
func (d *DB) columns() string {
	if d.schema < identitiesVersion {
		return sessionColumns + `'' FROM sessions`
	}
	return sessionColumns + `identities FROM sessions`
}

// Session implements store.Store.
func (d *DB) Session(ctx context.Context, id string) (store.Session, error) {
	s, err := scanSession(d.db.QueryRowContext(ctx, d.columns()+` WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Session{}, fmt.Errorf("looking up session %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Session{}, fmt.Errorf("looking up session %s: %w", id, err)
	}
	return s, nil
}

// Sessions implements store.Store. A negative Limit is an error.
//
// Identity and Service match case-sensitively, as in PostgreSQL. An exact
// value is compared with = (and, for Identity, found as a whole line of
// identities with instr), which is case-sensitive in both databases. A
// glob becomes LIKE … ESCAPE '\', portable but case-insensitive for ASCII
// in SQLite, and on identities it may match across two lines, so it only
// narrows the rows read; each row is then matched against the glob here.
// With a glob the limit is therefore applied while reading rather than in
// SQL.
func (d *DB) Sessions(ctx context.Context, f store.SessionFilter) ([]store.Session, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("listing sessions: negative limit %d", f.Limit)
	}
	q := d.sessionQuery(f)
	rows, err := d.db.QueryContext(ctx, q.sql, q.args...)
	if err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	defer rows.Close()
	var c chunks
	for rows.Next() {
		s, err := scanSession(rows)
		if err != nil {
			return nil, fmt.Errorf("listing sessions: %w", err)
		}
		if !q.match(s) {
			continue
		}
		c.add(s)
		if f.Limit > 0 && c.n == f.Limit {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	return c.all(), nil
}

// chunkSize is the most sessions a chunk holds, about 64 KiB of them.
const chunkSize = 256

// chunks collects sessions as they are read. A Session is about 260 bytes,
// and appending 10,000 of them to one slice spends a third of a listing
// regrowing it; chunks copy each session once, into a slice of the exact
// size.
type chunks struct {
	full [][]store.Session
	last []store.Session
	n    int
}

// add appends s. The first chunk grows as appending grows it, so that a
// short listing stays small; later ones are made full-sized.
func (c *chunks) add(s store.Session) {
	if len(c.last) == chunkSize {
		c.full = append(c.full, c.last)
		c.last = make([]store.Session, 0, chunkSize)
	}
	c.last = append(c.last, s)
	c.n++
}

// all returns the sessions added, in order; nil if none were.
func (c *chunks) all() []store.Session {
	if len(c.full) == 0 {
		return c.last
	}
	out := make([]store.Session, 0, c.n)
	for _, ch := range c.full {
		out = append(out, ch...)
	}
	return append(out, c.last...)
}

// query is a sessions query built from a filter, with the Go-side part of
// its glob matching.
type query struct {
	sql      string
	args     []any
	identity string // a glob on identity that LIKE only narrows, "" if none
	service  string // likewise for service
}

// sessionQuery builds the query for f. It compares columns with constants
// so that SQLite can use the indexes, except for an identity, which is
// also looked for in identities (no index: a scan of the rows in range).
func (d *DB) sessionQuery(f store.SessionFilter) query {
	var (
		q     query
		where []string
	)
	arg := func(v any) string {
		q.args = append(q.args, v)
		return "$" + strconv.Itoa(len(q.args))
	}
	text := func(col, pattern string) string {
		switch {
		case strings.Trim(pattern, "*") == "":
			return "" // empty, or all stars: matches everything
		case !strings.Contains(pattern, "*"):
			where = append(where, col+" = "+arg(pattern))
			return ""
		default:
			where = append(where, col+" LIKE "+arg(likePattern(pattern))+` ESCAPE '\'`)
			return pattern
		}
	}
	// An identity matches the identity column or a line of identities.
	switch p := f.Identity; {
	case strings.Trim(p, "*") == "":
	case d.schema < identitiesVersion:
		q.identity = text("identity", p)
	case !strings.Contains(p, "*"):
		a := arg(p)
		where = append(where, "(identity = "+a+" OR (identities <> '' AND instr(char(10) || identities || char(10), char(10) || "+a+" || char(10)) > 0))")
	default:
		a := arg(likePattern(p))
		where = append(where, "(identity LIKE "+a+` ESCAPE '\' OR identities LIKE '%' || `+a+` || '%' ESCAPE '\')`)
		q.identity = p
	}
	q.service = text("service", f.Service)
	if f.Outcome != "" {
		where = append(where, "outcome = "+arg(f.Outcome))
	}
	if f.Protocol != "" {
		where = append(where, "protocol = "+arg(f.Protocol))
	}
	if f.Status != "" {
		where = append(where, "status = "+arg(f.Status))
	}
	if !f.Since.IsZero() {
		where = append(where, "start_at >= "+arg(micros(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, "start_at < "+arg(micros(f.Until)))
	}
	var b strings.Builder
	b.WriteString(d.columns())
	if len(where) > 0 {
		b.WriteString(" WHERE ")
		b.WriteString(strings.Join(where, " AND "))
	}
	b.WriteString(sessionOrder)
	if f.Limit > 0 && q.identity == "" && q.service == "" {
		b.WriteString(" LIMIT " + arg(f.Limit))
	}
	q.sql = b.String()
	return q
}

// match reports whether s matches the query's globs, case-sensitively.
func (q query) match(s store.Session) bool {
	return (q.identity == "" || s.HasIdentity(q.identity)) &&
		(q.service == "" || store.MatchGlob(q.service, s.Service))
}

// likePattern turns a glob where * matches any run of characters into a
// LIKE pattern with \ as its escape character.
func likePattern(glob string) string {
	var b strings.Builder
	for _, r := range glob {
		switch r {
		case '*':
			b.WriteByte('%')
		case '%', '_', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// scanSession reads one row of DB.columns.
func scanSession(row interface{ Scan(dest ...any) error }) (store.Session, error) {
	var (
		s          store.Session
		start, end int64
		identities string
	)
	if err := row.Scan(&s.ID, &s.Identity, &s.Source, &s.Service, &s.Protocol, &s.Agent, &s.Transport,
		&s.Database, &s.DBUser, &start, &end, &s.BytesIn, &s.BytesOut, &s.Outcome, &s.Events, &s.Denies,
		&s.Status, &identities); err != nil {
		return store.Session{}, err
	}
	s.Start, s.End = fromZeroMicros(start), fromZeroMicros(end)
	if identities != "" {
		s.Identities = strings.Split(identities, "\n")
	}
	return s, nil
}

// zeroMicros stores a zero time as 0 rather than as the Unix microseconds of
// year 1. The Unix epoch itself is stored as 0 too, and so reads back zero.
func zeroMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return micros(t)
}

// fromZeroMicros reads 0 back as the zero time.
func fromZeroMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return fromMicros(us)
}
