// Package oidctest runs an OpenID Connect provider in process, for tests of
// Postern's bearer authentication (gateway/bearer and integration/). It
// exists for tests only and is imported only by _test.go files.
//
// Start serves zitadel/oidc's example OpenID provider
// (example/server/exampleop with its in-memory storage) over real HTTP on a
// free 127.0.0.1 port until the test ends, with one addition: machine
// clients (Client) that get JWT access tokens through the
// client-credentials grant. Such a token carries sub = the client id, the
// client's audience (default Audience) and its groups in the "groups"
// claim; Token obtains one from the running provider over HTTP, through its
// discovery document and token endpoint, exactly as a CI job would.
//
// For attacks, SigningKey returns the provider's own RS256 key and kid;
// Claims, Mint and Sign make tokens the provider never issued (expired, for
// another audience, alg none, HS256 keyed with the public key, unknown kid,
// …). SetDown makes the provider answer 503 to everything, Refused reports
// those answers and JWKSHits counts the JWKS fetches, for tests of an IdP
// that is down and of key refetching.
//
// The example provider's SetupServer replaces slog's default logger for
// the whole process; Start gives it one that discards, so the provider's
// request log stays out of test output. Code that logs through
// slog.Default (or the log package) in a test binary that calls Start is
// silenced too; Postern's components take their logger explicitly.
package oidctest
