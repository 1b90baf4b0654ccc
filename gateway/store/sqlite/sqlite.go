package sqlite

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/postern/postern/gateway/store"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// BusyTimeout is how long a statement waits for another connection or
// process holding the write lock before it fails.
const BusyTimeout = 5 * time.Second

// UsedTokenRetention is how long past its expiry a used join token is kept.
// An expired token is refused on its expiry alone; the row is kept a while
// longer so that clock skew between processes cannot reopen it.
const UsedTokenRetention = 24 * time.Hour

// DB is a store.Store in one SQLite file. It is safe for concurrent use, and
// several processes may open the same file at once.
type DB struct {
	db     *sql.DB
	path   string
	now    func() time.Time
	schema int // the schema version of the file: the latest, unless opened read-only
}

var _ store.Store = (*DB)(nil)

// Open opens the SQLite database at path, creating it if needed, and brings
// its schema up to date. It fails with an error wrapping
// store.ErrSchemaTooNew if the file was migrated by a newer Postern.
func Open(ctx context.Context, path string) (*DB, error) {
	return open(ctx, path, migrations)
}

func open(ctx context.Context, path string, ms []migration) (*DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	if err := migrate(ctx, db, ms); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating store %s: %w", path, err)
	}
	return &DB{db: db, path: abs, now: time.Now, schema: ms[len(ms)-1].Version}, nil
}

// OpenReadOnly opens the SQLite database at path for reading only, without
// creating or migrating anything: what auditors need of a data directory
// they must not change, or cannot (a read-only mount, a copy). It opens
// the file read-only alongside a running gateway; where SQLite cannot even
// share the write-ahead log's index (its directory is not writable), it
// opens the file as immutable, which is right for a read-only snapshot.
//
// A file of an older Postern (a gateway not restarted since an upgrade, an
// archived data dir) is read as it is, from the version that added the
// sessions index on: what later versions added reads as empty. A file
// migrated by a newer Postern is refused.
func OpenReadOnly(ctx context.Context, path string) (*DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	var errs []error
	for _, mode := range []string{"ro", "immutable"} {
		db, err := openReadOnly(ctx, abs, mode)
		if err == nil {
			return db, nil
		}
		errs = append(errs, err)
		var ve versionError
		if errors.As(err, &ve) {
			break // read, and not one this binary reads: immutable would not change that
		}
	}
	return nil, fmt.Errorf("opening store %s read-only: %w", path, errors.Join(errs...))
}

// sessionsVersion is the schema version that added the sessions index,
// the oldest that OpenReadOnly reads.
const sessionsVersion = 3

// versionError is a schema version OpenReadOnly does not read.
type versionError struct{ have, want int }

func (e versionError) Error() string {
	if e.have > e.want {
		return fmt.Sprintf("database is at schema version %d, newer than this binary reads (%d): %v", e.have, e.want, store.ErrSchemaTooNew)
	}
	return fmt.Sprintf("database is at schema version %d, older than the sessions index (%d): start its gateway once with this binary to migrate it, or read the recordings alone with --recordings", e.have, sessionsVersion)
}

func (e versionError) Unwrap() error {
	if e.have > e.want {
		return store.ErrSchemaTooNew
	}
	return nil
}

func openReadOnly(ctx context.Context, abs, mode string) (*DB, error) {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Set("mode", "ro")
	if mode == "immutable" {
		q.Set("immutable", "1")
	}
	u := url.URL{Path: filepath.ToSlash(abs)}
	db, err := sql.Open("sqlite", "file:"+u.EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	v, err := schemaVersion(ctx, db)
	if latest := migrations[len(migrations)-1].Version; err == nil && (v > latest || v < sessionsVersion) {
		err = versionError{have: v, want: latest}
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return &DB{db: db, path: abs, now: time.Now, schema: v}, nil
}

// dsn returns the modernc.org/sqlite data source name for the file at the
// absolute path abs. Explicit transactions begin IMMEDIATE so that a
// read-then-write transaction waits for the write lock instead of failing
// when another connection wrote in between.
func dsn(abs string) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	u := url.URL{Path: filepath.ToSlash(abs)}
	return "file:" + u.EscapedPath() + "?" + q.Encode()
}

// Path returns the absolute path of the database file.
func (d *DB) Path() string { return d.path }

// UseToken implements store.Store.
func (d *DB) UseToken(ctx context.Context, id, name string, expires time.Time) error {
	if id == "" {
		return errors.New("using join token: empty token id")
	}
	res, err := d.db.ExecContext(ctx,
		`INSERT INTO join_tokens (id, name, expires_at, used_at) VALUES ($1, $2, $3, $4)
		 ON CONFLICT (id) DO NOTHING`,
		id, name, micros(expires), micros(d.now()))
	if err != nil {
		return fmt.Errorf("using join token: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("using join token: %w", err)
	}
	if n == 0 {
		return store.ErrTokenUsed
	}
	return nil
}

// Prune deletes used join tokens whose expiry is more than
// UsedTokenRetention before now, and reports how many it deleted.
func (d *DB) Prune(ctx context.Context, now time.Time) (int64, error) {
	res, err := d.db.ExecContext(ctx,
		`DELETE FROM join_tokens WHERE expires_at < $1`,
		micros(now.Add(-UsedTokenRetention)))
	if err != nil {
		return 0, fmt.Errorf("pruning join tokens: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("pruning join tokens: %w", err)
	}
	return n, nil
}

// RecordIssued implements store.Store. Recording the same serial twice is
// an error.
func (d *DB) RecordIssued(ctx context.Context, i store.Issued) error {
	if i.Serial == "" {
		return errors.New("recording issued SVID: empty serial")
	}
	issuedAt := i.IssuedAt
	if issuedAt.IsZero() {
		issuedAt = d.now()
	}
	_, err := d.db.ExecContext(ctx,
		`INSERT INTO issued (serial, spiffe_id, kind, not_after, issued_at) VALUES ($1, $2, $3, $4, $5)`,
		i.Serial, i.ID, i.Kind, micros(i.NotAfter), micros(issuedAt))
	if err != nil {
		return fmt.Errorf("recording issued SVID %s: %w", i.Serial, err)
	}
	return nil
}

// IssuedBySerial returns the issued SVID with the given serial, or
// store.ErrNotFound.
func (d *DB) IssuedBySerial(ctx context.Context, serial string) (store.Issued, error) {
	var (
		i                  store.Issued
		notAfter, issuedAt int64
	)
	err := d.db.QueryRowContext(ctx,
		`SELECT serial, spiffe_id, kind, not_after, issued_at FROM issued WHERE serial = $1`,
		serial).Scan(&i.Serial, &i.ID, &i.Kind, &notAfter, &issuedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Issued{}, fmt.Errorf("looking up issued SVID %s: %w", serial, store.ErrNotFound)
	}
	if err != nil {
		return store.Issued{}, fmt.Errorf("looking up issued SVID %s: %w", serial, err)
	}
	i.NotAfter, i.IssuedAt = fromMicros(notAfter), fromMicros(issuedAt)
	return i, nil
}

// UpsertAgent implements store.Store. A zero LastSeen means now; FirstSeen
// is set on insert only (LastSeen if zero) and kept by later upserts.
// Services replace the agent's previous list.
func (d *DB) UpsertAgent(ctx context.Context, a store.Agent) (err error) {
	if a.Name == "" {
		return errors.New("upserting agent: empty name")
	}
	lastSeen := a.LastSeen
	if lastSeen.IsZero() {
		lastSeen = d.now()
	}
	firstSeen := a.FirstSeen
	if firstSeen.IsZero() {
		firstSeen = lastSeen
	}
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("upserting agent %s: %w", a.Name, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx,
		`INSERT INTO agents (name, spiffe_id, transport, source, first_seen, last_seen)
		 VALUES ($1, $2, $3, $4, $5, $6)
		 ON CONFLICT (name) DO UPDATE SET
		   spiffe_id = excluded.spiffe_id,
		   transport = excluded.transport,
		   source    = excluded.source,
		   last_seen = excluded.last_seen`,
		a.Name, a.ID, a.Transport, a.Source, micros(firstSeen), micros(lastSeen)); err != nil {
		return fmt.Errorf("upserting agent %s: %w", a.Name, err)
	}
	if _, err = tx.ExecContext(ctx, `DELETE FROM agent_services WHERE agent = $1`, a.Name); err != nil {
		return fmt.Errorf("upserting agent %s: %w", a.Name, err)
	}
	for pos, s := range a.Services {
		if _, err = tx.ExecContext(ctx,
			`INSERT INTO agent_services (agent, position, service) VALUES ($1, $2, $3)`,
			a.Name, pos, s); err != nil {
			return fmt.Errorf("upserting agent %s: %w", a.Name, err)
		}
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("upserting agent %s: %w", a.Name, err)
	}
	return nil
}

// Agents implements store.Store.
func (d *DB) Agents(ctx context.Context) ([]store.Agent, error) {
	return d.agents(ctx, "", false)
}

// Agent returns the agent with the given name, or store.ErrNotFound.
func (d *DB) Agent(ctx context.Context, name string) (store.Agent, error) {
	as, err := d.agents(ctx, name, true)
	if err != nil {
		return store.Agent{}, err
	}
	if len(as) == 0 {
		return store.Agent{}, fmt.Errorf("looking up agent %s: %w", name, store.ErrNotFound)
	}
	return as[0], nil
}

// agents reads the agents (only the one named name if one is true) with
// their services in a single statement, so that the result is consistent.
func (d *DB) agents(ctx context.Context, name string, one bool) ([]store.Agent, error) {
	rows, err := d.db.QueryContext(ctx,
		`SELECT a.name, a.spiffe_id, a.transport, a.source, a.first_seen, a.last_seen, s.service
		 FROM agents a LEFT JOIN agent_services s ON s.agent = a.name
		 WHERE $1 = 0 OR a.name = $2
		 ORDER BY a.name, s.position`,
		boolInt(one), name)
	if err != nil {
		return nil, fmt.Errorf("listing agents: %w", err)
	}
	defer rows.Close()
	var out []store.Agent
	for rows.Next() {
		var (
			a                   store.Agent
			firstSeen, lastSeen int64
			service             sql.NullString
		)
		if err := rows.Scan(&a.Name, &a.ID, &a.Transport, &a.Source, &firstSeen, &lastSeen, &service); err != nil {
			return nil, fmt.Errorf("listing agents: %w", err)
		}
		if n := len(out); n == 0 || out[n-1].Name != a.Name {
			a.FirstSeen, a.LastSeen = fromMicros(firstSeen), fromMicros(lastSeen)
			out = append(out, a)
		}
		if service.Valid {
			last := &out[len(out)-1]
			last.Services = append(last.Services, service.String)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing agents: %w", err)
	}
	return out, nil
}

// CreateAPIKey implements store.Store. A zero CreatedAt means now.
func (d *DB) CreateAPIKey(ctx context.Context, k store.APIKey) (err error) {
	if k.KeyID == "" {
		return errors.New("creating API key: empty key id")
	}
	if k.ID == "" {
		return fmt.Errorf("creating API key %s: empty SPIFFE ID", k.KeyID)
	}
	if len(k.SecretHash) == 0 {
		return fmt.Errorf("creating API key %s: empty secret hash", k.KeyID)
	}
	created := k.CreatedAt
	if created.IsZero() {
		created = d.now()
	}
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("creating API key %s: %w", k.KeyID, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx,
		`INSERT INTO api_keys (id, spiffe_id, secret_hash, created_at, expires_at, revoked_at)
		 VALUES ($1, $2, $3, $4, $5, $6)`,
		k.KeyID, k.ID, hex.EncodeToString(k.SecretHash), micros(created),
		nullMicros(k.ExpiresAt), nullMicros(k.RevokedAt)); err != nil {
		return fmt.Errorf("creating API key %s: %w", k.KeyID, err)
	}
	for pos, g := range k.Groups {
		if _, err = tx.ExecContext(ctx,
			`INSERT INTO api_key_groups (key_id, position, name) VALUES ($1, $2, $3)`,
			k.KeyID, pos, g); err != nil {
			return fmt.Errorf("creating API key %s: %w", k.KeyID, err)
		}
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("creating API key %s: %w", k.KeyID, err)
	}
	return nil
}

// APIKey implements store.Store.
func (d *DB) APIKey(ctx context.Context, keyID string) (store.APIKey, error) {
	ks, err := d.apiKeys(ctx, keyID, true)
	if err != nil {
		return store.APIKey{}, err
	}
	if len(ks) == 0 {
		return store.APIKey{}, fmt.Errorf("looking up API key %s: %w", keyID, store.ErrNotFound)
	}
	return ks[0], nil
}

// APIKeys implements store.Store.
func (d *DB) APIKeys(ctx context.Context) ([]store.APIKey, error) {
	return d.apiKeys(ctx, "", false)
}

// RevokeAPIKey implements store.Store.
func (d *DB) RevokeAPIKey(ctx context.Context, keyID string, at time.Time) error {
	if at.IsZero() {
		at = d.now()
	}
	res, err := d.db.ExecContext(ctx,
		`UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2`,
		micros(at), keyID)
	if err != nil {
		return fmt.Errorf("revoking API key %s: %w", keyID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("revoking API key %s: %w", keyID, err)
	}
	if n == 0 {
		return fmt.Errorf("revoking API key %s: %w", keyID, store.ErrNotFound)
	}
	return nil
}

// API key queries: with their groups in a single statement, so that the
// result is consistent. The one-key query is run on every request that
// carries an API key, so it must use the primary key (no OR in its WHERE).
const (
	apiKeyColumns = `SELECT k.id, k.spiffe_id, k.secret_hash, k.created_at, k.expires_at, k.revoked_at, g.name
		 FROM api_keys k LEFT JOIN api_key_groups g ON g.key_id = k.id`
	oneAPIKeyQuery  = apiKeyColumns + ` WHERE k.id = $1 ORDER BY g.position`
	allAPIKeysQuery = apiKeyColumns + ` ORDER BY k.created_at, k.id, g.position`
)

// apiKeys reads the API key with id keyID if one is true, else all of them.
func (d *DB) apiKeys(ctx context.Context, keyID string, one bool) ([]store.APIKey, error) {
	query, args := allAPIKeysQuery, []any(nil)
	if one {
		query, args = oneAPIKeyQuery, []any{keyID}
	}
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing API keys: %w", err)
	}
	defer rows.Close()
	var out []store.APIKey
	for rows.Next() {
		var (
			k                store.APIKey
			hash             string
			created          int64
			expires, revoked sql.NullInt64
			group            sql.NullString
		)
		if err := rows.Scan(&k.KeyID, &k.ID, &hash, &created, &expires, &revoked, &group); err != nil {
			return nil, fmt.Errorf("listing API keys: %w", err)
		}
		if n := len(out); n == 0 || out[n-1].KeyID != k.KeyID {
			if k.SecretHash, err = hex.DecodeString(hash); err != nil {
				return nil, fmt.Errorf("listing API keys: key %s: bad secret hash: %w", k.KeyID, err)
			}
			k.CreatedAt = fromMicros(created)
			k.ExpiresAt, k.RevokedAt = fromNullMicros(expires), fromNullMicros(revoked)
			out = append(out, k)
		}
		if group.Valid {
			last := &out[len(out)-1]
			last.Groups = append(last.Groups, group.String)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing API keys: %w", err)
	}
	return out, nil
}

// Ping implements store.Store.
func (d *DB) Ping(ctx context.Context) error {
	if err := d.db.PingContext(ctx); err != nil {
		return fmt.Errorf("pinging store: %w", err)
	}
	return nil
}

// Close implements store.Store.
func (d *DB) Close() error {
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("closing store: %w", err)
	}
	return nil
}

// micros converts t to Unix microseconds, the stored form of every time.
func micros(t time.Time) int64 { return t.UnixMicro() }

// fromMicros converts stored Unix microseconds back to a UTC time.
func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// nullMicros stores a zero time as NULL.
func nullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: micros(t), Valid: true}
}

// fromNullMicros reads NULL back as the zero time.
func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
