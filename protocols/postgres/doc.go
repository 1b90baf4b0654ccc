// Package postgres is the gateway's Postgres handler: it terminates the
// client's protocol after TLS, decides the session's database and role and
// then every statement by policy, and relays the session to the server
// through an agent that logged in with credentials only it holds.
//
// The relay reads every message the client sends (pgx/v5/pgproto3 decodes
// them) and classifies each Query and Parse with package classify, the real
// Postgres parser. Rows and COPY data pass through unread in both
// directions, so a result of any size streams with flat memory.
//
// # Refusals in place
//
// A refused statement never reaches the server. In its place the handler
// sends a Bind of a prepared statement that cannot exist (its name carries a
// random per-session part), so the server itself fails at exactly that
// point of the stream: it answers every message before it, skips every
// message after it until Sync, and rolls back or fails the transaction just
// as it would for its own error. The server loop shows the client ERROR
// 42501, naming the policy rule, instead of the server's error. Simple
// queries and pipelines of the extended protocol keep their order, and
// drivers stay in step with no timing assumptions.
//
// # Cancel
//
// Clients get a backend key made by the gateway (Keys); a CancelRequest
// with it goes, through the same agent, to that session's backend only.
//
// # Audit
//
// Every Query and every Execute is recorded as a postgres.query event with
// its text, its Bind parameters, the decision, the server's command tags
// and row counts or its error, and its duration; refusals also as
// authz.deny. With CaptureRows, the first rows of each result are kept too.
package postgres
