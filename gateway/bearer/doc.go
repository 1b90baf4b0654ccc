// Package bearer authenticates HTTP and gRPC clients that carry no SVID but
// send "Authorization: Bearer TOKEN": machines such as CI jobs, scripts and
// services in other platforms.
//
// It exists so that those callers end up with the same kind of identity as
// an mTLS client — a SPIFFE ID in the gateway's trust domain and a list of
// groups — and so go through the same policy, and so that every decision
// about trusting a token lives in one small package that can be reviewed
// on its own.
//
// Two kinds of token are accepted:
//
//   - a JWT from a configured OpenID Connect issuer. The issuer and the
//     audience are pinned, the signature is checked with keys from the
//     issuer's JWKS (fetched in the background, refetched when an unknown
//     key id appears), only asymmetric algorithms from an allow-list are
//     accepted, and the SPIFFE ID is made from the token's claims with a
//     template that cannot be steered into another path.
//   - an API key the gateway issued ("pk_<keyid>_<secret>"). The store keeps
//     only the SHA-256 of the secret; every request looks the key up, so a
//     revocation takes effect on the next request.
//
// Every refusal wraps ErrUnauthenticated with a reason that is safe to log:
// it never contains the token or a secret.
package bearer
