package sqlite

// migration is one step of the schema. Versions start at 1 and increase by
// one; a released migration is never edited, only followed by a new one.
type migration struct {
	Version int
	Name    string
	Stmts   []string
}

// migrations is the schema, in order.
var migrations = []migration{
	{
		Version: 1,
		Name:    "initial",
		Stmts: []string{
			`CREATE TABLE join_tokens (
				id         TEXT PRIMARY KEY,
				name       TEXT NOT NULL,
				expires_at BIGINT NOT NULL,
				used_at    BIGINT NOT NULL
			)`,
			`CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at)`,
			`CREATE TABLE issued (
				serial    TEXT PRIMARY KEY,
				spiffe_id TEXT NOT NULL,
				kind      TEXT NOT NULL,
				not_after BIGINT NOT NULL,
				issued_at BIGINT NOT NULL
			)`,
			`CREATE INDEX issued_spiffe_id ON issued (spiffe_id)`,
			`CREATE TABLE agents (
				name       TEXT PRIMARY KEY,
				spiffe_id  TEXT NOT NULL,
				transport  TEXT NOT NULL,
				source     TEXT NOT NULL,
				first_seen BIGINT NOT NULL,
				last_seen  BIGINT NOT NULL
			)`,
			`CREATE TABLE agent_services (
				agent    TEXT NOT NULL REFERENCES agents (name) ON DELETE CASCADE,
				position INTEGER NOT NULL,
				service  TEXT NOT NULL,
				PRIMARY KEY (agent, position)
			)`,
		},
	},
	{
		Version: 2,
		Name:    "api keys",
		Stmts: []string{
			// secret_hash is the hex SHA-256 of the key's secret; the
			// secret itself is never stored. NULL expires_at: no expiry;
			// NULL revoked_at: not revoked.
			`CREATE TABLE api_keys (
				id          TEXT PRIMARY KEY,
				spiffe_id   TEXT NOT NULL,
				secret_hash TEXT NOT NULL,
				created_at  BIGINT NOT NULL,
				expires_at  BIGINT,
				revoked_at  BIGINT
			)`,
			`CREATE TABLE api_key_groups (
				key_id   TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
				position INTEGER NOT NULL,
				name     TEXT NOT NULL,
				PRIMARY KEY (key_id, position)
			)`,
		},
	},
	{
		Version: 3,
		Name:    "sessions",
		Stmts: []string{
			// The index of recorded sessions. start_at and end_at are 0
			// for a zero time (end_at while the session is open), not
			// NULL. The start index is descending with id ascending, the
			// order in which sessions are listed.
			`CREATE TABLE sessions (
				id        TEXT PRIMARY KEY,
				identity  TEXT NOT NULL,
				source    TEXT NOT NULL,
				service   TEXT NOT NULL,
				protocol  TEXT NOT NULL,
				agent     TEXT NOT NULL,
				transport TEXT NOT NULL,
				db_name   TEXT NOT NULL,
				db_user   TEXT NOT NULL,
				start_at  BIGINT NOT NULL,
				end_at    BIGINT NOT NULL,
				bytes_in  BIGINT NOT NULL,
				bytes_out BIGINT NOT NULL,
				outcome   TEXT NOT NULL,
				events    BIGINT NOT NULL,
				denies    BIGINT NOT NULL,
				status    TEXT NOT NULL
			)`,
			`CREATE INDEX sessions_start_at ON sessions (start_at DESC, id)`,
			`CREATE INDEX sessions_identity ON sessions (identity)`,
			`CREATE INDEX sessions_service ON sessions (service)`,
		},
	},
	{
		Version: 4,
		Name:    "session identities",
		Stmts: []string{
			// The identities besides identity that made requests in a
			// session (store.Session.Identities), one a line: a SPIFFE
			// ID has no line break.
			`ALTER TABLE sessions ADD COLUMN identities TEXT NOT NULL DEFAULT ''`,
		},
	},
	{
		Version: 5,
		Name:    "sessions to rescan",
		Stmts: []string{
			// Sessions whose rows the gateway makes again from their
			// recordings once (store.Store.SessionsToRescan): HTTP and
			// gRPC sessions indexed without an identity, which before
			// version 4 was every session of bearer tokens. Writing a
			// session's row takes it off the list.
			`CREATE TABLE sessions_rescan (id TEXT PRIMARY KEY)`,
			`INSERT INTO sessions_rescan (id)
			   SELECT id FROM sessions WHERE identity = '' AND identities = '' AND protocol IN ('http', 'grpc')`,
		},
	},
}
