package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// ErrTokenUsed is returned by UseToken when the join token was used before.
var ErrTokenUsed = errors.New("join token already used")

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer Postern than this one; this binary must not write to it.
var ErrSchemaTooNew = errors.New("database schema is newer than this binary")

// Kinds of issued SVIDs.
const (
	KindAgent    = "agent"
	KindUser     = "user"
	KindWorkload = "workload"
	KindGateway  = "gateway"
)

// Issued records one X.509-SVID the gateway signed.
type Issued struct {
	Serial   string // certificate serial number, hex
	ID       string // SPIFFE ID
	Kind     string // one of the Kind constants
	NotAfter time.Time
	IssuedAt time.Time
}

// Agent is an agent as last seen by the gateway.
type Agent struct {
	Name      string
	ID        string   // SPIFFE ID
	Transport string   // "quic" or "tls"
	Services  []string // "name=proto", in the agent's order
	Source    string   // remote address of its tunnel
	LastSeen  time.Time
	FirstSeen time.Time // kept from the first upsert; later values are ignored
}

// APIKey is an API key the gateway issued to a machine. The store keeps a
// hash of the key's secret, never the secret itself.
type APIKey struct {
	KeyID      string   // the public id, the part after "pk_" in the key
	ID         string   // SPIFFE ID the key authenticates as
	Groups     []string // in the order given at creation
	SecretHash []byte   // SHA-256 of the secret
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never expires
	RevokedAt  time.Time // zero: not revoked
}

// Session is one recorded session in the index of recordings: what
// `postern audit list` shows without opening the recording.
type Session struct {
	ID       string
	Identity string // the connection's identity; for a session without one, the first identity that made a request in it
	// Identities are the others that made requests in the session (bearer
	// tokens of HTTP requests and gRPC calls), in the order they first
	// did, at most MaxIdentities.
	Identities []string
	Source     string
	Service    string
	Protocol   string
	Agent      string
	Transport  string
	Database   string // Postgres sessions
	DBUser     string // Postgres sessions
	Start      time.Time
	End        time.Time // zero while the session is open
	BytesIn    int64
	BytesOut   int64
	Outcome    string // "" while open; ok, denied, error, truncated
	Events     int64  // records in the recording
	Denies     int64  // authz.deny events
	Status     string // "open" while recording, "sealed" once sealed
}

// SessionFilter selects sessions. Zero fields match everything.
type SessionFilter struct {
	Identity string    // exact, or a glob where * matches any run of characters; against Identity and Identities
	Service  string    // exact, or a glob with *
	Outcome  string    // exact
	Protocol string    // exact
	Status   string    // exact: "open" for the sessions still being recorded
	Since    time.Time // sessions that started at or after
	Until    time.Time // sessions that started before
	Limit    int       // at most this many; 0: no limit
}

// MaxIdentities bounds Session.Identities: a session in which more
// identities acted lists the first ones.
const MaxIdentities = 64

// AddIdentity notes that id acted in the session (made a request, a call):
// it becomes the session's Identity if the session has none, and joins
// Identities otherwise.
func (s *Session) AddIdentity(id string) {
	s.Identity, s.Identities = AddIdentity(s.Identity, s.Identities, id)
}

// AddIdentity is Session.AddIdentity for an identity and its others held
// elsewhere: it returns them with id noted.
func AddIdentity(identity string, others []string, id string) (string, []string) {
	switch {
	case id == "" || id == identity || slices.Contains(others, id):
	case identity == "":
		identity = id
	case len(others) < MaxIdentities:
		others = append(others, id)
	}
	return identity, others
}

// HasIdentity reports whether pattern (exact, or a glob where * matches
// any run of characters) matches the session's Identity or one of its
// Identities.
func (s Session) HasIdentity(pattern string) bool {
	return MatchGlob(pattern, s.Identity) || slices.ContainsFunc(s.Identities, func(id string) bool { return MatchGlob(pattern, id) })
}

// Matches reports whether s passes f, Limit aside. It is what every Store
// and every reader of recordings without a store filters by.
func (f SessionFilter) Matches(s Session) bool {
	switch {
	case f.Identity != "" && !s.HasIdentity(f.Identity),
		f.Service != "" && !MatchGlob(f.Service, s.Service),
		f.Outcome != "" && f.Outcome != s.Outcome,
		f.Protocol != "" && f.Protocol != s.Protocol,
		f.Status != "" && f.Status != s.Status,
		!f.Since.IsZero() && s.Start.Before(f.Since),
		!f.Until.IsZero() && !s.Start.Before(f.Until):
		return false
	}
	return true
}

// MatchGlob reports whether s matches pattern, case-sensitively, where *
// matches any run of characters and everything else only itself.
func MatchGlob(pattern, s string) bool {
	first, rest, ok := strings.Cut(pattern, "*")
	if !ok {
		return pattern == s
	}
	if !strings.HasPrefix(s, first) {
		return false
	}
	s = s[len(first):]
	for {
		part, more, ok := strings.Cut(rest, "*")
		if !ok { // the last part: a suffix of what is left
			return strings.HasSuffix(s, part)
		}
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s, rest = s[i+len(part):], more
	}
}

// Store is the gateway's durable state. Implementations are safe for
// concurrent use and for use by several processes on the same database.
type Store interface {
	// UseToken atomically marks the join token id used, remembering it
	// until after expires. It returns ErrTokenUsed if the id was used before.
	UseToken(ctx context.Context, id, name string, expires time.Time) error
	// RecordIssued remembers an issued SVID.
	RecordIssued(ctx context.Context, i Issued) error
	// UpsertAgent inserts or updates the agent named a.Name.
	UpsertAgent(ctx context.Context, a Agent) error
	// Agents returns every agent, ordered by name.
	Agents(ctx context.Context) ([]Agent, error)
	// CreateAPIKey stores a new API key; a key id used before is an error.
	CreateAPIKey(ctx context.Context, k APIKey) error
	// APIKey returns the API key with the given id, or ErrNotFound.
	APIKey(ctx context.Context, keyID string) (APIKey, error)
	// RevokeAPIKey marks the key revoked at at, or returns ErrNotFound.
	// Revoking a revoked key keeps its first revocation time.
	RevokeAPIKey(ctx context.Context, keyID string, at time.Time) error
	// APIKeys returns every API key, revoked ones included, oldest first.
	APIKeys(ctx context.Context) ([]APIKey, error)
	// IndexSessions inserts or replaces (by ID) the given sessions in one
	// transaction, and takes them off the sessions to rescan.
	IndexSessions(ctx context.Context, ss []Session) error
	// SessionsToRescan returns the ids of the sessions whose rows are to be
	// made again from their recordings once (rows written by an older
	// version that did not derive everything the rows now hold).
	SessionsToRescan(ctx context.Context) ([]string, error)
	// Sessions returns the indexed sessions that match f, newest start first
	// (ties by ID).
	Sessions(ctx context.Context, f SessionFilter) ([]Session, error)
	// Session returns the indexed session id, or ErrNotFound.
	Session(ctx context.Context, id string) (Session, error)
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}
