// Package pki holds Postern's identity vocabulary: the Issuer seam that turns
// a public key and a SPIFFE ID into an X.509-SVID, the rules that every
// Postern SVID follows, and the on-disk SVID files.
//
// # Identities
//
// Every Postern identity is a SPIFFE ID in one trust domain TD:
//
//	spiffe://TD/gateway/NAME   the gateway itself (1h by default)
//	spiffe://TD/agent/NAME     an enrolled agent (1h by default)
//	spiffe://TD/user/NAME      a person (8h by default)
//	spiffe://TD/workload/NAME  a program acting for itself (1h by default)
//
// Kind tells these apart and DefaultTTL gives each its default lifetime. Any
// TTL of at least MinTTL (one minute) may be asked for; a shorter one is an
// error.
//
// # Certificates
//
// An X.509-SVID issued by Postern carries an ECDSA P-256 key and the SPIFFE ID
// as its only URI SAN. Gateway certificates may also carry DNS names (the
// public names clients dial). Key usage is digitalSignature and the extended
// key usages are serverAuth and clientAuth, so the same SVID serves both ends
// of mutual TLS.
//
// # Groups
//
// The groups an identity belongs to travel inside its certificate as values
// of the Subject organizationalUnit (OU) attribute, one OU per group, in the
// order they were given. The issuer writes them (IssueRequest.Groups) and
// peers read them back with Groups. They are covered by the CA's signature, so
// a peer trusts them exactly as far as it trusts the SPIFFE ID. Because they
// are fixed for the certificate's lifetime, a change of group membership takes
// effect at the next renewal.
//
// # Files
//
// SVIDs are kept on disk in the spiffe-helper layout, in one directory:
//
//	svid.pem         the leaf certificate, then its intermediates (PEM)
//	svid_key.pem     the private key, PKCS#8 PEM, mode 0600
//	svid_bundle.pem  the trust roots (PEM)
//
// WriteFiles replaces each file atomically (write to a temporary file, then
// rename), so a reader never sees half a file. ReadFiles reports a missing
// identity with an error that wraps os.ErrNotExist.
package pki
