package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/postern/postern/protocols"
)

// TestPostgresReadOnlyAttacks: an identity that may only read (statements:
// [read]) tries to write, change schema or lift read-only mode in every way
// that hides a write from a keyword check, through the simple and the
// extended protocol. Each try must be refused with 42501 naming the rule,
// leave the session usable, and be recorded with verdict deny; at the end
// the table, its sequence, a victim backend and the file system are as
// they were. The session's role is the superuser, so only Postern stands
// in the way (the server's read-only mode would not stop most of these).
func TestPostgresReadOnlyAttacks(t *testing.T) {
	e := startPG(t, "tls")
	tbl := pgTable(t, "attack")
	seq := tbl + "_seq"
	su := superuser(t, "test")
	pgExec(t, su, "CREATE SEQUENCE "+seq)
	victim := pgName("victim")
	victimConn := superuser(t, "test")
	pgExec(t, victimConn, "SET application_name = '"+victim+"'")
	pwned := fmt.Sprintf("/tmp/%s_pwned", pgName("copy"))
	t.Cleanup(func() {
		os.Remove(pwned)
		// Should an attack have got through, leave nothing behind.
		if c, err := pgx.Connect(context.Background(), "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname=test"); err == nil {
			c.Exec(context.Background(), "DROP TABLE IF EXISTS "+tbl+"_copy, "+tbl+"_new")
			c.Exec(context.Background(), "ROLLBACK PREPARED 'postern_attack'")
			c.Close(context.Background())
		}
	})

	snapshot := func() string {
		var s string
		err := su.QueryRow(context.Background(), fmt.Sprintf(
			"SELECT (SELECT string_agg(id||':'||v, ',' ORDER BY id) FROM %s) || ' seq ' || (SELECT last_value||'/'||is_called FROM %s)", tbl, seq)).Scan(&s)
		if err != nil {
			return err.Error()
		}
		return s
	}
	before := snapshot()
	expand := func(s string) string {
		return strings.NewReplacer("{t}", tbl, "{s}", seq, "{victim}", victim, "{pwned}", pwned).Replace(s)
	}

	attacks := []string{
		"SELECT 1; DELETE FROM {t}",
		"select 1;delete from {t}",
		"SELECT 1 /* ; */ ; UPDATE {t} SET v = 'x'",
		"WITH d AS (DELETE FROM {t} RETURNING *) SELECT * FROM d",
		"WITH u AS (UPDATE {t} SET v = 'x' RETURNING id) SELECT count(*) FROM u",
		"WITH i AS (INSERT INTO {t} VALUES (99, 'x') RETURNING id) SELECT * FROM i",
		"SELECT $$;$$; DROP TABLE {t}",
		"SELECT $a$ ; DROP TABLE {t}; $a$; DROP TABLE {t}",
		"/* */ DELETE FROM {t}",
		"/* SELECT */ DELETE FROM {t}",
		"--\nDELETE FROM {t}",
		"-- SELECT 1\nUPDATE {t} SET v = 'x'",
		"SELECT * FROM {t} FOR UPDATE",
		"SELECT * FROM {t} FOR SHARE",
		"SELECT * INTO {t}_copy FROM {t}",
		"EXPLAIN ANALYZE DELETE FROM {t}",
		"SET default_transaction_read_only = off",
		"SET SESSION default_transaction_read_only TO false",
		"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
		"BEGIN READ WRITE",
		"START TRANSACTION READ WRITE",
		"COPY {t} TO PROGRAM 'touch {pwned}'",
		"COPY (SELECT 1) TO '{pwned}'",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{victim}'",
		"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = '{victim}'",
		"DO $$ BEGIN DELETE FROM {t}; END $$",
		"PREPARE p AS DELETE FROM {t}",
		"PREPARE p AS DELETE FROM {t}; EXECUTE p",
		"SELECT nextval('{s}')",
		"SELECT setval('{s}', 100)",
		"SELECT set_config('default_transaction_read_only', 'off', false)",
		"SELECT pg_read_file('/etc/hostname')",
		"ALTER SYSTEM RESET postern_test.never_set",
		"INSERT INTO {t} VALUES (4, 'd')",
		"UPDATE {t} SET v = 'x'",
		"DELETE FROM {t}",
		"TRUNCATE {t}",
		"DROP TABLE {t}",
		"CREATE TABLE {t}_new (a int)",
		"GRANT ALL ON {t} TO PUBLIC",
		"SET standard_conforming_strings = off",
		"SELECT set_config('standard_conforming_strings', 'off', false)",
		"SET client_encoding = 'SJIS'",
		"SET session_replication_role = replica",
		"SET transaction_read_only = off",
		"SET default_transaction_read_only TO DEFAULT",
		"RESET default_transaction_read_only",
		"RESET ALL",
		"DISCARD ALL",
		"SET SESSION AUTHORIZATION DEFAULT",
		"SELECT query_to_xml('DELETE FROM {t} RETURNING *', true, true, '')",
		"SELECT * FROM (SELECT * FROM {t} FOR UPDATE) s",
		"EXPLAIN ANALYZE WITH d AS (DELETE FROM {t} RETURNING *) SELECT * FROM d",
		"SELECT pg_advisory_lock(1)",
		"SELECT lo_import('/etc/hostname')",
		"LOCK TABLE {t}",
		"CREATE TEMP TABLE {t}_tmp (a int)",
		"CHECKPOINT",
		"PREPARE TRANSACTION 'postern_attack'",
		"COPY {t} FROM STDIN",
		"SELEC * FROM {t}",
		"DELETE FROM {t} WHERE (",
		"SELECT 1; DELETE FROM {t} WHERE (",
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := pgConnect(t, e.g, e.reader, "postgres", "test")
	refuse := func(what string, err error) {
		t.Helper()
		pe := wantPgError(t, what, err, "42501")
		if pe != nil && !strings.Contains(pe.Message, readerRule) && !strings.Contains(pe.Message, protocols.DefaultDeny) {
			t.Errorf("%s: got message %q, want it to name the rule (%s or %s)", what, pe.Message, readerRule, protocols.DefaultDeny)
		}
		wantUsable(t, c, what)
	}

	for _, a := range attacks {
		sql := expand(a)
		// Simple protocol: one Query message.
		results, err := c.PgConn().Exec(ctx, sql).ReadAll()
		for _, r := range results {
			if r.Err == nil && r.CommandTag.String() != "" {
				t.Errorf("simple %q: part of it ran (%s), want all refused", sql, r.CommandTag)
			}
		}
		refuse("simple "+sql, err)
		// Extended protocol: Parse, Bind, Describe, Execute, Sync.
		refuse("extended "+sql, c.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err)
		if after := snapshot(); after != before {
			t.Fatalf("after %q: table and sequence are %q, want %q unchanged", sql, after, before)
		}
	}

	// Writes that take parameters, through pgx's prepared statements.
	withParams := map[string][]any{
		"DELETE FROM {t} WHERE id > $1":    {0},
		"UPDATE {t} SET v = $1":            {"x"},
		"INSERT INTO {t} VALUES ($1, $2)":  {5, "e"},
		"SELECT nextval($1)":               {seq},
		"SELECT set_config($1, $2, false)": {"default_transaction_read_only", "off"},
		"WITH d AS (DELETE FROM {t} WHERE id = $1 RETURNING *) SELECT * FROM d": {1},
	}
	for a, args := range withParams {
		sql := expand(a)
		_, err := c.Exec(ctx, sql, args...)
		refuse("pgx "+sql, err)
		if after := snapshot(); after != before {
			t.Fatalf("after %q: table and sequence are %q, want %q unchanged", sql, after, before)
		}
	}
	_, err := c.Prepare(ctx, "evil", expand("DELETE FROM {t}"))
	refuse("pgx Prepare of a DELETE", err)

	// A refusal inside a batch keeps the connection in step. pgx first
	// prepares every statement of a batch (and gives up at the refusal);
	// in exec mode it sends each one whole, and one Sync at the end: what
	// came before the refusal ran, the rest up to the Sync is skipped.
	batch := func() *pgx.Batch {
		b := &pgx.Batch{}
		b.Queue("SELECT 1")
		b.Queue(expand("DELETE FROM {t} WHERE id > $1"), 0)
		b.Queue("SELECT 3")
		return b
	}
	br := c.SendBatch(ctx, batch())
	var n int
	if err := br.QueryRow().Scan(&n); pgCode(err) != "42501" {
		t.Errorf("prepared batch with a DELETE: got %d, %v; want 42501", n, err)
	}
	br.Close()
	wantUsable(t, c, "a refused prepared batch")
	cfg := pgConfig(t, e.g, "pg", e.reader, "postgres", "test")
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	ce, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	br = ce.SendBatch(ctx, batch())
	if err := br.QueryRow().Scan(&n); err != nil || n != 1 {
		t.Errorf("batch before the refusal: got %d, %v; want 1", n, err)
	}
	if _, err := br.Exec(); pgCode(err) != "42501" {
		t.Errorf("batch DELETE: got %v, want 42501", err)
	}
	if err := br.QueryRow().Scan(&n); err == nil {
		t.Errorf("batch after the refusal: got %d, want it skipped", n)
	}
	br.Close()
	wantUsable(t, ce, "a refused batch")
	ce.Close(ctx)

	// And in a raw pipeline with two Syncs.
	p := c.PgConn().StartPipeline(ctx)
	p.SendQueryParams("SELECT 1", nil, nil, nil, nil)
	p.SendQueryParams(expand("DELETE FROM {t}"), nil, nil, nil, nil)
	p.SendQueryParams("SELECT 'skipped'", nil, nil, nil, nil)
	p.Sync()
	p.SendQueryParams("SELECT 'after sync'", nil, nil, nil, nil)
	p.Sync()
	got := pipelineResults(t, p)
	if want := []string{"1", "error 42501", "sync", "after sync", "sync"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got pipeline results %q, want %q", got, want)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	wantUsable(t, c, "a refused pipeline")

	// In a transaction, a refusal fails the transaction like a server error.
	pgExec(t, c, "BEGIN")
	pgExec(t, c, "SELECT 1")
	_, err = c.PgConn().Exec(ctx, expand("DELETE FROM {t}")).ReadAll()
	wantPgError(t, "DELETE in a transaction", err, "42501")
	_, err = c.PgConn().Exec(ctx, "SELECT 1").ReadAll()
	wantPgError(t, "SELECT after a refusal in a transaction", err, "25P02")
	wantPgError(t, "extended SELECT after a refusal in a transaction", c.PgConn().ExecParams(ctx, "SELECT 1", nil, nil, nil, nil).Read().Err, "25P02")
	if tx := c.PgConn().TxStatus(); tx != 'E' {
		t.Errorf("got transaction status %q, want E (failed)", tx)
	}
	pgExec(t, c, "ROLLBACK")
	wantUsable(t, c, "ROLLBACK")

	// Reading works, and read-only mode is still on.
	if got := pgString(t, c, "SELECT string_agg(v, ',' ORDER BY id) FROM "+tbl); got != "a,b,c" {
		t.Errorf("reading the table: got %q, want a,b,c", got)
	}
	if got := pgString(t, c, "SHOW default_transaction_read_only"); got != "on" {
		t.Errorf("got default_transaction_read_only %s after the attacks, want on", got)
	}

	// Nothing changed.
	if after := snapshot(); after != before {
		t.Errorf("table and sequence: got %q, want %q unchanged", after, before)
	}
	for _, name := range []string{tbl + "_copy", tbl + "_new"} {
		if got := pgString(t, su, "SELECT count(*)::text FROM pg_class WHERE relname = $1", name); got != "0" {
			t.Errorf("table %s was created", name)
		}
	}
	if got := pgString(t, su, "SELECT count(*)::text FROM information_schema.role_table_grants WHERE table_name = $1 AND grantee = 'PUBLIC'", tbl); got != "0" {
		t.Errorf("GRANT ran: %s grants to PUBLIC on %s", got, tbl)
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Errorf("%s exists: COPY TO PROGRAM or to a file ran", pwned)
	}
	if err := victimConn.Ping(ctx); err != nil {
		t.Errorf("the victim backend was terminated: %v", err)
	}

	// Every refusal is recorded: a postgres.query with verdict deny and
	// code 42501 for each attack in each protocol, and authz.deny events.
	c.Close(ctx)
	var denied map[string]int
	var denies int
	recs := pgRecordings(t, e.g, readerID, func(rs []pgRecording) bool {
		denied, denies = map[string]int{}, 0
		for _, r := range rs {
			denies += len(r.denies)
			for _, q := range r.queries {
				if q.Verdict == protocols.VerdictDeny {
					denied[q.Protocol+" "+q.SQL]++
				}
			}
		}
		for _, a := range attacks {
			if denied["simple "+expand(a)] == 0 || denied["extended "+expand(a)] == 0 {
				return false
			}
		}
		return true
	})
	for _, r := range recs {
		for _, q := range r.queries {
			if q.Verdict == protocols.VerdictDeny && (q.Code != "42501" || q.Rule == "") {
				t.Errorf("refused query %q recorded with code %q rule %q, want 42501 and a rule", q.SQL, q.Code, q.Rule)
			}
		}
	}
	for _, a := range attacks {
		for _, proto := range []string{"simple", "extended"} {
			if denied[proto+" "+expand(a)] == 0 {
				t.Errorf("no postgres.query with verdict deny recorded for %s %q", proto, expand(a))
			}
		}
	}
	// The recording says what each refused query was.
	for sql, want := range map[string]struct {
		class string
		tags  []string
	}{
		"DELETE FROM {t}": {"write", []string{"DELETE"}},
		"DROP TABLE {t}":  {"ddl", []string{"DROP TABLE"}},
		"ALTER SYSTEM RESET postern_test.never_set": {"admin", []string{"ALTER SYSTEM"}},
		"SELECT nextval('{s}')":                     {"write", []string{"SELECT"}},
		"SELECT 1; DELETE FROM {t}":                 {"write", []string{"SELECT", "DELETE"}},
	} {
		sql = expand(sql)
		var q *protocols.PostgresQueryEvent
		for _, r := range recs {
			for i := range r.queries {
				if r.queries[i].SQL == sql && r.queries[i].Protocol == "simple" {
					q = &r.queries[i]
				}
			}
		}
		if q == nil || q.Class != want.class || strings.Join(q.Tags, ",") != strings.Join(want.tags, ",") || q.Rule != readerRule {
			t.Errorf("%q: got recorded %+v, want class %s, tags %v, rule %s", sql, q, want.class, want.tags, readerRule)
		}
	}
	if want := 2*len(attacks) + len(withParams); denies < want {
		t.Errorf("got %d authz.deny events, want at least %d", denies, want)
	}
}

// TestPostgresUnparsableForWriter: a statement that does not parse reaches
// the server for an identity that may run everything, which answers with
// its own syntax error.
func TestPostgresUnparsableForWriter(t *testing.T) {
	e := startPG(t, "quic")
	c := pgConnect(t, e.g, e.writer, "postgres", "test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.PgConn().Exec(ctx, "SELEC 1").ReadAll()
	wantPgError(t, "simple SELEC 1", err, "42601")
	wantPgError(t, "extended SELEC 1", c.PgConn().ExecParams(ctx, "SELEC 1", nil, nil, nil, nil).Read().Err, "42601")
	wantUsable(t, c, "a syntax error")
}

// TestPostgresRefusalInTransaction: a refused statement fails the
// transaction as a server error would. Later statements get 25P02 until
// ROLLBACK, COMMIT rolls back what the transaction did (it must not commit
// the allowed INSERT before the refusal), and ROLLBACK TO SAVEPOINT
// recovers, in the simple and in the extended protocol.
func TestPostgresRefusalInTransaction(t *testing.T) {
	e := startPG(t, "quic")
	tbl := pgTable(t, "tx")
	su := superuser(t, "test")
	c := pgConnect(t, e.g, issue(t, e.g, insertID, "inserters"), "postgres", "test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := func() string { return pgString(t, su, "SELECT string_agg(id::text, ',' ORDER BY id) FROM "+tbl) }
	simple := func(sql string) (string, error) {
		results, err := c.PgConn().Exec(ctx, strings.ReplaceAll(sql, "{t}", tbl)).ReadAll()
		if err != nil {
			return "", err
		}
		return results[len(results)-1].CommandTag.String(), nil
	}
	step := func(sql, wantTag, wantCode string) {
		t.Helper()
		tag, err := simple(sql)
		if wantCode != "" {
			wantPgError(t, sql, err, wantCode)
			return
		}
		if err != nil || tag != wantTag {
			t.Errorf("%s: got %q, %v; want %q", sql, tag, err, wantTag)
		}
	}

	step("BEGIN", "BEGIN", "")
	step("INSERT INTO {t} VALUES (10, 'allowed')", "INSERT 0 1", "")
	step("DELETE FROM {t}", "", "42501")
	step("SELECT 1", "", "25P02")
	step("INSERT INTO {t} VALUES (11, 'after')", "", "25P02")
	if tx := c.PgConn().TxStatus(); tx != 'E' {
		t.Errorf("got transaction status %q, want E (failed)", tx)
	}
	step("COMMIT", "ROLLBACK", "")
	if got := ids(); got != "1,2,3" {
		t.Fatalf("after COMMIT of a failed transaction: got ids %s, want 1,2,3 (the INSERT rolled back)", got)
	}
	wantUsable(t, c, "a failed transaction")

	step("BEGIN", "BEGIN", "")
	step("SAVEPOINT s", "SAVEPOINT", "")
	step("DELETE FROM {t}", "", "42501")
	step("ROLLBACK TO SAVEPOINT s", "ROLLBACK", "")
	step("INSERT INTO {t} VALUES (12, 'after savepoint')", "INSERT 0 1", "")
	step("COMMIT", "COMMIT", "")
	if got := ids(); got != "1,2,3,12" {
		t.Fatalf("after ROLLBACK TO SAVEPOINT and COMMIT: got ids %s, want 1,2,3,12", got)
	}

	// pgx's transactions use the extended protocol for parameters.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" VALUES ($1, $2)", 13, "pgx"); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "DELETE FROM "+tbl+" WHERE id = $1", 1)
	wantPgError(t, "pgx DELETE in a transaction", err, "42501")
	_, err = tx.Exec(ctx, "SELECT $1::int", 1)
	wantPgError(t, "pgx SELECT after the refusal", err, "25P02")
	if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Errorf("pgx Commit of a failed transaction: got %v, want %v", err, pgx.ErrTxCommitRollback)
	}
	if got := ids(); got != "1,2,3,12" {
		t.Fatalf("after pgx's Commit of a failed transaction: got ids %s, want 1,2,3,12", got)
	}
	wantUsable(t, c, "a failed pgx transaction")
}

// TestPostgresSideDoorAttacks: ways around the statement check that are not
// statements. A read-only identity must not lift read-only mode or change
// how the server reads string literals with startup parameters (which
// would let the server see a DELETE where the classifier saw a string),
// nor call a function by OID with the fastpath FunctionCall message; and a
// user-defined function that writes, which the classifier cannot see
// into, is stopped by the server's read-only mode.
func TestPostgresSideDoorAttacks(t *testing.T) {
	e := startPG(t, "quic")
	tbl := pgTable(t, "side")
	su := superuser(t, "test")
	rows := func() string { return pgString(t, su, "SELECT string_agg(id||':'||v, ',' ORDER BY id) FROM "+tbl) }
	const want = "1:a,2:b,3:c"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// With standard_conforming_strings off the server reads 'x\'' as the
	// string x' and then runs the DELETE; with it on (what the classifier
	// assumes) the whole text after SELECT is one string.
	smuggle := "SELECT 'x\\'' ; DELETE FROM " + tbl + "; -- '"
	// In SJIS, 0x95 0x5c is one character: the server would see the quote
	// after it close the E'' string.
	sjis := "SELECT E'\x95\\' ; DELETE FROM " + tbl + "; -- '"
	for name, params := range map[string]map[string]string{
		"default_transaction_read_only=off":            {"default_transaction_read_only": "off"},
		"options -c default_transaction_read_only=off": {"options": "-c default_transaction_read_only=off"},
		"options -c transaction_read_only=off":         {"options": "-c transaction_read_only=off"},
		"standard_conforming_strings=off":              {"standard_conforming_strings": "off"},
		"options -c standard_conforming_strings=off":   {"options": "-c standard_conforming_strings=off"},
		"options --standard-conforming-strings=off":    {"options": "--standard_conforming_strings=off"},
		"client_encoding=SJIS":                         {"client_encoding": "SJIS"},
		"options -c client_encoding=SJIS":              {"options": "-c client_encoding=SJIS"},
		"options -c session_replication_role=replica":  {"options": "-c session_replication_role=replica"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := pgConfig(t, e.g, "pg", e.reader, "postgres", "test").Config
			cfg.RuntimeParams = params
			c, err := pgconn.ConnectConfig(ctx, &cfg)
			if err != nil {
				return // refusing the session is a fine answer
			}
			defer c.Close(ctx)
			for _, setting := range []struct{ name, want string }{
				{"default_transaction_read_only", "on"}, {"transaction_read_only", "on"},
				{"standard_conforming_strings", "on"}, {"client_encoding", "UTF8"},
				{"session_replication_role", "origin"},
			} {
				res, err := c.Exec(ctx, "SHOW "+setting.name).ReadAll()
				if err != nil {
					t.Errorf("SHOW %s: %v", setting.name, err)
				} else if got := string(res[0].Rows[0][0]); got != setting.want {
					t.Errorf("got %s = %s, want %s", setting.name, got, setting.want)
				}
			}
			for _, sql := range []string{smuggle, sjis} {
				_, err := c.Exec(ctx, sql).ReadAll()
				if err == nil {
					t.Errorf("%q: got no error, want it refused", sql)
				}
				err = c.ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err
				if err == nil {
					t.Errorf("extended %q: got no error, want it refused", sql)
				}
			}
			if got := rows(); got != want {
				t.Fatalf("got rows %s, want %s unchanged", got, want)
			}
		})
	}

	t.Run("fastpath FunctionCall", func(t *testing.T) {
		victim := superuser(t, "test")
		var victimPID int32
		if err := victim.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&victimPID); err != nil {
			t.Fatal(err)
		}
		var terminate, nextval uint32
		if err := su.QueryRow(ctx, "SELECT 'pg_terminate_backend(integer,bigint)'::regprocedure::oid, 'nextval(regclass)'::regprocedure::oid").Scan(&terminate, &nextval); err != nil {
			t.Fatal(err)
		}
		seq := tbl + "_fp_seq"
		pgExec(t, su, "CREATE SEQUENCE "+seq)
		var seqOID uint32
		if err := su.QueryRow(ctx, "SELECT $1::regclass::oid", seq).Scan(&seqOID); err != nil {
			t.Fatal(err)
		}
		be32 := func(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }
		for name, call := range map[string]*pgproto3.FunctionCall{
			"pg_terminate_backend": {Function: terminate, ArgFormatCodes: []uint16{1},
				Arguments: [][]byte{be32(uint32(victimPID)), make([]byte, 8)}, ResultFormatCode: 1},
			"nextval": {Function: nextval, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{be32(seqOID)}, ResultFormatCode: 1},
		} {
			c := pgConnect(t, e.g, e.reader, "postgres", "test").PgConn()
			hc, err := c.Hijack()
			if err != nil {
				t.Fatal(err)
			}
			hc.Conn.SetDeadline(time.Now().Add(10 * time.Second))
			hc.Frontend.Send(call)
			if err := hc.Frontend.Flush(); err != nil {
				t.Fatal(err)
			}
			var got []string
			for {
				msg, err := hc.Frontend.Receive()
				if err != nil {
					got = append(got, "closed")
					break
				}
				switch m := msg.(type) {
				case *pgproto3.ErrorResponse:
					got = append(got, "error "+m.Code)
				case *pgproto3.FunctionCallResponse:
					got = append(got, "result")
				case *pgproto3.ReadyForQuery:
					got = append(got, "ready")
				default:
					got = append(got, fmt.Sprintf("%T", m))
				}
				if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
					break
				}
			}
			hc.Conn.Close()
			t.Logf("%s by FunctionCall: %v", name, got)
			if strings.Contains(strings.Join(got, " "), "result") {
				t.Errorf("%s by FunctionCall: got %v, want it refused", name, got)
			}
		}
		if err := victim.Ping(ctx); err != nil {
			t.Errorf("the victim was terminated by a FunctionCall: %v", err)
		}
		if got := pgString(t, su, "SELECT last_value||'/'||is_called FROM "+seq); got != "1/false" {
			t.Errorf("got sequence %s, want 1/false (nextval by FunctionCall ran)", got)
		}
	})

	t.Run("user-defined function that writes", func(t *testing.T) {
		fn := tbl + "_wipe"
		pgExec(t, su, "CREATE FUNCTION "+fn+"() RETURNS int LANGUAGE plpgsql AS $$ BEGIN DELETE FROM "+tbl+"; RETURN 1; END $$")
		c := pgConnect(t, e.g, e.reader, "postgres", "test")
		_, err := c.Exec(ctx, "SELECT "+fn+"()")
		if code := pgCode(err); code != "42501" && code != "25006" {
			t.Errorf("SELECT %s(): got %v, want 42501 (Postern) or 25006 (read-only transaction)", fn, err)
		}
		if got := rows(); got != want {
			t.Fatalf("got rows %s, want %s unchanged", got, want)
		}
	})
}

// TestPostgresPipelinedRefusals: a client that sends several messages
// without waiting gets the answers in order: a refusal comes after the
// server's answers to what was sent before it (the first query sleeps, so
// a refusal written at once would overtake it), in the simple and the
// extended protocol; a query with a NUL byte inside is refused too.
func TestPostgresPipelinedRefusals(t *testing.T) {
	e := startPG(t, "tls")
	tbl := pgTable(t, "pipe")
	su := superuser(t, "test")
	del := "DELETE FROM " + tbl
	tests := map[string][]pgproto3.FrontendMessage{
		"simple": {
			&pgproto3.Query{String: "SELECT pg_sleep(0.3)::text || 'first'"},
			&pgproto3.Query{String: del},
			&pgproto3.Query{String: "SELECT 'second'"},
		},
		"extended": {
			&pgproto3.Parse{Query: "SELECT pg_sleep(0.3)::text || 'first'"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Parse{Query: del}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Parse{Query: "SELECT 'second'"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
		},
		"simple then extended": {
			&pgproto3.Query{String: "SELECT pg_sleep(0.3)::text || 'first'"},
			&pgproto3.Parse{Query: del}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Query{String: "SELECT 'second'"},
		},
	}
	for name, msgs := range tests {
		t.Run(name, func(t *testing.T) {
			hc, err := pgConnect(t, e.g, e.reader, "postgres", "test").PgConn().Hijack()
			if err != nil {
				t.Fatal(err)
			}
			defer hc.Conn.Close()
			hc.Conn.SetDeadline(time.Now().Add(10 * time.Second))
			for _, m := range msgs {
				hc.Frontend.Send(m)
			}
			if err := hc.Frontend.Flush(); err != nil {
				t.Fatal(err)
			}
			var seen []string
			for ready := 0; ready < 3; {
				msg, err := hc.Frontend.Receive()
				if err != nil {
					t.Fatalf("after %q: %v", seen, err)
				}
				switch m := msg.(type) {
				case *pgproto3.DataRow:
					seen = append(seen, string(m.Values[0]))
				case *pgproto3.ErrorResponse:
					seen = append(seen, "error")
					if m.Code != "42501" {
						t.Errorf("got error %s %s, want 42501", m.Code, m.Message)
					}
				case *pgproto3.ReadyForQuery:
					seen = append(seen, "ready")
					ready++
				}
			}
			if got, want := strings.Join(seen, " "), "first ready error ready second ready"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			if got := pgString(t, su, "SELECT count(*)::text FROM "+tbl); got != "3" {
				t.Fatalf("got %s rows, want 3", got)
			}
		})
	}

	// A Query whose text holds a NUL: the server would read only up to it
	// and refuse the message; Postern refuses it (42501) or, as it does
	// now, ends the session with a protocol violation (08P01).
	t.Run("NUL inside a query", func(t *testing.T) {
		hc, err := pgConnect(t, e.g, e.reader, "postgres", "test").PgConn().Hijack()
		if err != nil {
			t.Fatal(err)
		}
		defer hc.Conn.Close()
		hc.Conn.SetDeadline(time.Now().Add(10 * time.Second))
		hc.Frontend.Send(&pgproto3.Query{String: "SELECT 1\x00; " + del})
		if err := hc.Frontend.Flush(); err != nil {
			t.Fatal(err)
		}
		var code string
		for {
			msg, err := hc.Frontend.Receive()
			if err != nil {
				break
			}
			if m, ok := msg.(*pgproto3.ErrorResponse); ok {
				code = m.Code
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		if code != "42501" && code != "08P01" {
			t.Errorf("got error code %q, want 42501 or 08P01", code)
		}
		if got := pgString(t, su, "SELECT count(*)::text FROM "+tbl); got != "3" {
			t.Fatalf("got %s rows, want 3", got)
		}
	})
}

// TestPostgresRuleCombinations: a deny rule with a postgres section refuses
// only the statements it names, naming itself, for an identity that may
// otherwise run everything; an identity admitted by a read-only rule and by
// one that also allows INSERT is not read-only, may INSERT, and may still
// not DELETE.
func TestPostgresRuleCombinations(t *testing.T) {
	e := startPG(t, "quic")
	tbl := pgTable(t, "rules")
	su := superuser(t, "test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dora := pgConnect(t, e.g, issue(t, e.g, doraID, "ops"), "postgres", "test")
	_, err := dora.Exec(ctx, "TRUNCATE "+tbl)
	wantPgError(t, "TRUNCATE under a deny rule", err, "42501", "dora-no-truncate")
	if _, err := dora.Exec(ctx, "INSERT INTO "+tbl+" VALUES (4, 'd')"); err != nil {
		t.Errorf("INSERT, which the deny rule does not name: %v", err)
	}
	if got := pgString(t, dora, "SHOW default_transaction_read_only"); got != "off" {
		t.Errorf("dora: got default_transaction_read_only %s, want off", got)
	}

	both := pgConnect(t, e.g, issue(t, e.g, "spiffe://postern.local/user/bea", "analysts", "inserters"), "postgres", "test")
	if got := pgString(t, both, "SHOW default_transaction_read_only"); got != "off" {
		t.Errorf("analyst and inserter: got default_transaction_read_only %s, want off", got)
	}
	if _, err := both.Exec(ctx, "INSERT INTO "+tbl+" VALUES (5, 'e')"); err != nil {
		t.Errorf("analyst and inserter, INSERT: %v", err)
	}
	_, err = both.Exec(ctx, "DELETE FROM "+tbl)
	wantPgError(t, "analyst and inserter, DELETE", err, "42501")
	if got := pgString(t, su, "SELECT string_agg(id::text, ',' ORDER BY id) FROM "+tbl); got != "1,2,3,4,5" {
		t.Errorf("got ids %s, want 1,2,3,4,5", got)
	}
}

// TestPostgresRefusedParseLeavesNameFree: a refused Parse never reaches the
// server, so its statement name stays free, as after any failed Parse: a
// later Parse of an allowed statement under that name is what Bind and
// Execute run, and must be allowed.
func TestPostgresRefusedParseLeavesNameFree(t *testing.T) {
	e := startPG(t, "quic")
	r := pgConnect(t, e.g, e.reader, "postgres", "test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := r.Prepare(ctx, "stmt", "DELETE FROM pg_catalog.pg_class WHERE false")
	wantPgError(t, "Prepare of a DELETE", err, "42501")
	if _, err := r.Prepare(ctx, "stmt", "SELECT $1::int + 1"); err != nil {
		t.Fatalf("Prepare under the name the refusal left free: %v", err)
	}
	var n int
	if err := r.QueryRow(ctx, "stmt", 41).Scan(&n); err != nil || n != 42 {
		t.Errorf("executing the allowed statement: got %d, %v; want 42", n, err)
	}
}
