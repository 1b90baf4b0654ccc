// Package connect is the client side of `postern connect`: a local
// plaintext port whose every connection is wrapped in mTLS with the caller's
// SVID and sent to SERVICE.PUBLIC_NAME at the gateway. It serves clients that
// cannot present a certificate themselves (GUIs, drivers).
package connect
