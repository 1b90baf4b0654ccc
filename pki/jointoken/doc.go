// Package jointoken mints and checks the join tokens that enroll agents.
//
// An operator runs `postern token create --name NAME`; the gateway mints a
// token bound to that agent name and prints it. The agent presents it once,
// with a CSR, to obtain its first SVID; after that it renews over its own
// mTLS identity and never needs a token again.
//
// A token is a JWT signed by the gateway's join key with ES256 (ECDSA P-256,
// SHA-256). Its claims are:
//
//	iss  "postern"
//	aud  "postern-join"
//	sub  the agent name (a valid SPIFFE path segment)
//	jti  a random 128-bit identifier
//	iat, exp  issue and expiry times (15 minutes by default)
//	td   the trust domain
//	fp   hex SHA-256 of the gateway's root CA certificate (DER)
//
// Verify accepts only ES256 under the given public key, requires every claim
// above, and reports expired tokens with ErrExpired and every other failure
// (bad signature, other key, other algorithm, malformed or missing claims)
// with ErrInvalid. Inspect reads the claims without checking the signature:
// the agent uses it before enrollment to learn the name and to pin the
// gateway's CA by the fp fingerprint while it has no trust bundle yet.
//
// Tokens are single use, but a JWT cannot enforce that by itself: the gateway
// records Claims.ID when a token is redeemed and refuses it the second time.
package jointoken
