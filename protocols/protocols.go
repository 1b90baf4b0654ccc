package protocols

import (
	"context"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Protocol names, as used in --service NAME=PROTO://HOST:PORT and in events.
const (
	TCP      = "tcp"
	Postgres = "postgres"
	HTTP     = "http"
	GRPC     = "grpc"
)

// ValidProtocol reports whether p names a protocol Postern serves.
func ValidProtocol(p string) bool {
	switch p {
	case TCP, Postgres, HTTP, GRPC:
		return true
	}
	return false
}

// Request is what an Authorizer decides on. At connection level only the
// identity, groups and service are set; protocol handlers add their own
// fields (statement, route, method) in later protocol-aware requests.
type Request struct {
	Identity spiffeid.ID
	Groups   []string
	Service  string
	Protocol string

	// Postgres is set by the Postgres handler for the decisions it asks
	// for: a session's startup (database and role) and each statement.
	Postgres *PostgresRequest
	// HTTP is set by the HTTP handler for each request it decides.
	HTTP *HTTPRequest
	// GRPC is set by the gRPC handler for each call it decides.
	GRPC *GRPCRequest
}

// HTTPRequest is one HTTP request to decide on.
type HTTPRequest struct {
	Method string // upper case, as sent
	Path   string // the cleaned, decoded path the upstream will see, without query
}

// GRPCRequest is one gRPC call to decide on.
type GRPCRequest struct {
	Method string // the full method name, "/package.Service/Method"
}

// PostgresRequest is the Postgres part of a Request.
type PostgresRequest struct {
	Database string // the session's database
	User     string // the database role the session logs in as
	// Startup marks the decision at session start, on Database and User
	// only; the statement fields below are then empty.
	Startup bool
	// Class is the statement's class (read, write, ddl, admin), the
	// strongest of everything it does.
	Class string
	// Tag is the statement's command tag ("SELECT", "CREATE TABLE"…).
	// TagExact is true when the tag alone says what the statement does
	// (nothing nested raised its class), so that a rule may match it by
	// tag: SELECT nextval('s') has tag SELECT but is not TagExact.
	Tag      string
	TagExact bool
	// TxControl marks BEGIN, COMMIT, ROLLBACK, SAVEPOINT…, which every
	// rule that admits the session allows.
	TxControl bool
	// Setting marks a startup parameter decided like the statement SET:
	// part of the session's startup, not counted against a rule's rate.
	Setting bool
}

// Decision is an Authorizer's verdict. Rule names the rule that made it, or
// "default-deny" when none matched.
type Decision struct {
	Allow  bool
	Rule   string
	Reason string
	// ReadOnly is set on an allowed Postgres startup decision when every
	// rule that admits the session allows only read statements; the
	// session's server side then starts with default_transaction_read_only.
	ReadOnly bool
	// RateLimited is set on a refusal because the identity went over the
	// rate of the rule that would have allowed it.
	RateLimited bool
}

// DefaultDeny is the rule name of a decision that no rule made.
const DefaultDeny = "default-deny"

// Authorizer decides whether a request may go on.
type Authorizer interface {
	Authorize(ctx context.Context, r Request) Decision
}

// AuthorizerFunc adapts a function to the Authorizer interface.
type AuthorizerFunc func(ctx context.Context, r Request) Decision

// Authorize calls f.
func (f AuthorizerFunc) Authorize(ctx context.Context, r Request) Decision { return f(ctx, r) }

// Recorder receives the events of sessions, in order per session. Record
// must not block the data path for long.
type Recorder interface {
	Record(e Event)
}

// RecorderFunc adapts a function to the Recorder interface.
type RecorderFunc func(e Event)

// Record calls f.
func (f RecorderFunc) Record(e Event) { f(e) }

// EventType names an event in a recording. New types are added, never
// renamed, so that old recordings stay readable.
type EventType string

// Event types.
const (
	SessionStarted EventType = "session.start"
	SessionEnded   EventType = "session.end"
	AuthzDenied    EventType = "authz.deny"
	TCPData        EventType = "tcp.data"
	PostgresQuery  EventType = "postgres.query"
	HTTPRequested  EventType = "http.request"
	GRPCCalled     EventType = "grpc.call"
)

// Event is one entry of a session's recording. Data is one of the *Data
// types below, matching Type.
type Event struct {
	Session string
	Time    time.Time
	Type    EventType
	Data    any
}

// SessionStart opens every recording, allowed or denied.
type SessionStart struct {
	Identity  string   `json:"identity,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	Source    string   `json:"source"`
	Service   string   `json:"service,omitempty"`
	Protocol  string   `json:"protocol,omitempty"`
	Agent     string   `json:"agent,omitempty"`
	Transport string   `json:"transport,omitempty"`
	// Database and User are a Postgres session's database and role.
	Database string `json:"database,omitempty"`
	User     string `json:"db_user,omitempty"`
}

// Outcomes of a session.
const (
	OutcomeOK     = "ok"     // allowed and ended normally
	OutcomeDenied = "denied" // refused by policy or authentication
	OutcomeError  = "error"  // allowed but failed (no agent, upstream down, …)
	// OutcomeTruncated closes a recording that a crash cut short; the next
	// gateway start writes it.
	OutcomeTruncated = "truncated"
)

// SessionEnd closes every recording.
type SessionEnd struct {
	Outcome  string `json:"outcome"`
	BytesIn  int64  `json:"bytes_in"`  // client → service
	BytesOut int64  `json:"bytes_out"` // service → client
	Duration int64  `json:"duration_ms"`
	Error    string `json:"error,omitempty"`
}

// AuthzDeny records a refusal and the rule that made it.
type AuthzDeny struct {
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
}

// Directions of TCPDataEvent.
const (
	ClientToService = "in"
	ServiceToClient = "out"
)

// TCPDataEvent records bytes relayed in one direction since the previous one.
type TCPDataEvent struct {
	Direction string `json:"direction"`
	Bytes     int64  `json:"bytes"`
}

// Verdicts of statements, requests and calls.
const (
	VerdictAllow = "allow"
	VerdictDeny  = "deny"
)

// PostgresQueryEvent records one query: a simple-protocol Query message
// (which may hold several statements) or one Execute of the extended
// protocol, with the parameters of its Bind.
type PostgresQueryEvent struct {
	SQL string `json:"sql"`
	// Params are the Bind parameters, text as sent, binary ones as \x and
	// hex, NULL as nil.
	Params   []*string `json:"params,omitempty"`
	Protocol string    `json:"protocol"`           // simple or extended
	Prepared string    `json:"prepared,omitempty"` // the prepared statement's name
	Class    string    `json:"class"`
	Tags     []string  `json:"tags,omitempty"`   // the statements' command tags
	Verdict  string    `json:"verdict"`          // allow or deny
	Rule     string    `json:"rule,omitempty"`   // the rule that decided
	Reason   string    `json:"reason,omitempty"` // why a statement was refused
	// Completed are the server's CommandComplete tags ("SELECT 3",
	// "INSERT 0 1"); Rows sums their row counts.
	Completed []string `json:"completed,omitempty"`
	Rows      int64    `json:"rows"`
	// Code and Error are the SQLSTATE and message of the error that ended
	// the query, if one did (42501 for a refusal).
	Code     string  `json:"code,omitempty"`
	Error    string  `json:"error,omitempty"`
	Duration float64 `json:"duration_ms"`
	// Columns and Result hold the first rows of each result when the
	// service captures rows (capture_rows); nil values are NULL.
	Columns []string    `json:"columns,omitempty"`
	Result  [][]*string `json:"result,omitempty"`
}

// Ways a caller of an HTTP or gRPC service authenticated.
const (
	AuthSVID   = "svid"   // the client's X.509-SVID
	AuthOIDC   = "oidc"   // a bearer JWT from a configured OIDC issuer
	AuthAPIKey = "apikey" // a bearer API key the gateway issued
)

// HTTPRequestEvent is the data of an http.request event: one request, its
// decision and, when it was forwarded, the upstream's answer.
type HTTPRequestEvent struct {
	Method   string  `json:"method"`
	Path     string  `json:"path"`            // as the upstream saw it (cleaned); as sent when refused before cleaning
	Query    string  `json:"query,omitempty"` // the raw query
	Identity string  `json:"identity,omitempty"`
	Auth     string  `json:"auth,omitempty"` // svid, oidc or apikey
	Verdict  string  `json:"verdict"`        // allow or deny
	Rule     string  `json:"rule,omitempty"`
	Reason   string  `json:"reason,omitempty"`
	Status   int     `json:"status"` // the status the client got
	BytesIn  int64   `json:"bytes_in"`
	BytesOut int64   `json:"bytes_out"`
	Upgrade  string  `json:"upgrade,omitempty"` // the protocol of an Upgrade (websocket)
	Error    string  `json:"error,omitempty"`
	Duration float64 `json:"duration_ms"`
}

// GRPCCallEvent is the data of a grpc.call event: one call, its decision
// and its final status.
type GRPCCallEvent struct {
	Method   string  `json:"method"`
	Identity string  `json:"identity,omitempty"`
	Auth     string  `json:"auth,omitempty"`
	Verdict  string  `json:"verdict"`
	Rule     string  `json:"rule,omitempty"`
	Reason   string  `json:"reason,omitempty"`
	Status   int     `json:"status"`            // the gRPC status code
	Message  string  `json:"message,omitempty"` // the gRPC status message
	BytesIn  int64   `json:"bytes_in"`
	BytesOut int64   `json:"bytes_out"`
	Duration float64 `json:"duration_ms"`
}
