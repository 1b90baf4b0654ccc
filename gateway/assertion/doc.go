// Package assertion tells an upstream who is calling.
//
// The gateway authenticates every HTTP and gRPC caller (an SVID, an OIDC
// token or an API key) and then forwards the request over a tunnel to a
// service that cannot see any of that: the TLS session ended at the gateway.
// So each forwarded request carries the header Postern-Jwt-Assertion, a JWT
// that the gateway signs with ES256 (ECDSA P-256, SHA-256) and whose claims
// are:
//
//	iss     the gateway's SPIFFE ID, spiffe://TD/gateway/NAME (Signer.Issuer)
//	sub     the caller's SPIFFE ID
//	aud     the service name, as a one-element array
//	groups  the caller's groups, always an array (maybe empty)
//	iat     when the token was signed
//	exp     iat + 5 minutes (Lifetime)
//	jti     128 random bits, hex
//
// The header also names the key: "kid" is the RFC 7638 thumbprint of the
// public key. The gateway publishes its keys as a JWKS (RFC 7517; EC P-256,
// alg ES256, use sig) at https://PUBLIC_NAME:PORT/.well-known/postern/jwks.json,
// served by Signer.Handler. An upstream checks the header with any JWT
// library and that JWKS: Verify and Verifier do it for Go, and
// github.com/MicahParks/keyfunc/v3 works as well. It must check aud against
// its own service name, or a token for one service could be replayed to
// another.
//
// Signing costs tens of microseconds and every request needs a token, so a
// Signer reuses a token for the same subject, audience and groups for up to
// a minute (ReuseFor) and then signs a new one: a token handed out always
// has at least four minutes left. A jti therefore names a token, not a
// request; upstreams must not use it to detect replays. The cache is
// bounded (MaxCached entries).
//
// Keys: LoadOrCreate keeps the private key as a PKCS#8 PEM file, mode 0600,
// created on first start and reused after. Rotate replaces it with a new key
// and keeps serving the previous public key for ten minutes (RetainPrevious),
// longer than any token it signed can live. The previous key lives only in
// memory: after a restart, tokens it signed (at most five minutes old) fail
// at upstreams that have fetched the new JWKS.
package assertion
