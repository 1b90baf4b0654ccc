// Package integration runs Postern whole on loopback: a real gateway, real
// agents over real QUIC and TLS + yamux, real client TLS (Go, openssl, the
// postern binary) and real services, and checks what a user would see.
package integration
