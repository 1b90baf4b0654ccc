// Package connect is the client side of `postern connect`: a local
// plaintext port whose every connection is wrapped in mTLS with the caller's
// SVID and sent to SERVICE.PUBLIC_NAME at the gateway. It serves clients that
// cannot present a certificate themselves (GUIs, drivers).
//
// Most services are relayed byte for byte. A Postgres service, which the
// gateway tells by offering ALPN "postgresql", gets a plain Postgres local
// side instead: connect declines the client's SSLRequest or GSSENCRequest
// (so sslmode=disable and the default sslmode=prefer both work) and sends its
// StartupMessage or CancelRequest as the first bytes inside TLS, which is
// what the gateway expects of a client using libpq's sslnegotiation=direct.
package connect
