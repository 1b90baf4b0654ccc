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
package agent
