// Package gateway is Postern's gateway: the one place where identity is
// proven and policy is enforced.
//
// A Server owns a data directory (CA, join-token key, store, recordings), one
// TCP port and the same UDP port. The TCP port is told apart by its first
// bytes: a Postgres SSLRequest is answered 'S' and continues as TLS; TLS is
// then dispatched by ALPN and SNI — ALPN postern-tunnel/1 is an agent's
// tunnel (TLS + yamux), SNI SERVICE.PUBLIC_NAME is a client reaching a
// service, and the bare public name is the gateway's own HTTPS API
// (enrollment, renewal, bundle). The UDP port carries agents' QUIC tunnels.
//
// Clients are authorized per connection by the policy engine, routed to a
// healthy agent that serves the named service, and relayed through a tunnel
// stream; every session, allowed or denied, is written to the recorder.
package gateway
