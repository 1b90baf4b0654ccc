// Package rotate keeps an X.509-SVID fresh for the process that holds it
// (an agent, the gateway, `postern connect`).
//
// A Source is an x509svid.Source: TLS configurations built on it (go-spiffe's
// tlsconfig) ask it for the current SVID at every handshake, so a renewal
// takes effect for new connections at once while established connections and
// their sessions carry on untouched.
//
// Run renews at half the SVID's lifetime, measured from the certificate's own
// NotBefore and NotAfter. Each renewal generates a new ECDSA P-256 key and a
// CSR, hands both to the Renewer (the agent's call to the gateway, or the
// gateway's own CA), checks that the returned leaf holds the new key and the
// same SPIFFE ID, swaps it in atomically and calls Options.OnRotate (to write
// the SVID files, for example). A failed renewal keeps the current SVID and
// is retried with exponential backoff from Options.MinRetry up to a tenth of
// the lifetime or 30 seconds, whichever is less, until it succeeds or the SVID
// expires; then Run returns an error wrapping ErrExpired so that its caller
// can enroll again.
package rotate
