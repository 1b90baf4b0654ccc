// Package policy decides who may reach which service through the gateway.
//
// A policy is a YAML file of rules (SPEC §6, docs/POLICY.md). Parse checks
// every key of it and compiles every pattern once, reporting all problems
// with their lines and columns in an *Error, so that a request is decided
// by walking compiled rules, without allocating.
//
// A rule applies to a request when one of its identity patterns matches
// the caller and one of its service globs matches the service. In identity
// patterns (spiffe://TRUST_DOMAIN/PATH) '*' matches within one path segment
// and '**' matches any number of segments, including none; group:NAME
// matches a caller in group NAME. Service globs use '*' for any run of
// characters and '?' for one.
//
// At connection level (Authorize):
//
//   - a deny rule counts only when it has no postgres, http or grpc
//     section; if one applies, the connection is refused, naming that rule.
//     A deny rule with a section refuses only the statements, requests or
//     calls its section matches, which the protocol handlers decide later.
//   - otherwise the first allow rule that applies, in file order, allows
//     the connection and is named in the decision. Its sections, if any,
//     narrow later statements, requests and calls.
//   - otherwise the decision is protocols.DefaultDeny.
//
// For a Postgres session (a Request with Postgres set) Authorize also
// decides by the rules' postgres sections: at startup, whether the session
// may use its database as its role, and whether every rule that admits it
// allows only reads (Decision.ReadOnly); then each statement, by its class
// and command tag. docs/POLICY.md gives the exact order and which rule a
// decision names.
//
// The rules' http and grpc sections and rates are parsed, validated and
// compiled here (HTTPRule, GRPCRule, Rate) for the protocol handlers to
// enforce.
//
// Engine holds the policy in force behind an atomic pointer so that Watch
// can swap in a reloaded file while connections are being decided; an
// invalid file never replaces a valid policy.
package policy
