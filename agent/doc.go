// Package agent is Postern's agent: it runs next to services, dials out to
// the gateway (so services need no inbound port), proves itself with an SVID
// it got by enrolling with a single-use join token, and serves the streams
// the gateway opens to its services.
//
// The agent keeps its SVID in its data directory and renews it at half-life
// over mTLS without dropping the tunnel. When the gateway goes away it
// reconnects with jittered exponential backoff (capped at 30s) and announces
// its services again. With transport "auto" it prefers QUIC and falls back to
// TLS + yamux when UDP does not get through.
//
// Stopped (its context done, SIGTERM for the binary), it drains: it tells
// the gateway it is leaving, the gateway sends it no new stream and closes
// its idle ones, and the agent leaves once the streams it carries have
// ended, or when Config.DrainTimeout (10s) has passed.
//
// For a postgres service the gateway has already spoken the client's
// startup and decided the database role; the agent logs in to Postgres as
// that role with a secret only it holds (Service.Postgres: a password read
// at each login, or a client certificate), passes the server's answer back,
// and then relays bytes. Secrets are never logged or sent to the gateway.
package agent
