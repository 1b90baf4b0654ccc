// Package ca is the gateway's embedded certificate authority: it signs the
// short-lived X.509-SVIDs of agents, users, workloads and the gateway itself,
// so a Postern deployment needs no separate CA server.
//
// # Hierarchy
//
// A self-signed root (10 years) signs an intermediate (1 year, never past the
// root); the intermediate signs leaves. Both CA certificates use ECDSA P-256
// and carry the trust domain's SPIFFE ID (spiffe://TD) as their URI SAN, the
// SPIFFE convention for signing certificates, so a bundle made of the root
// names its trust domain. The intermediate is re-issued with a new key when
// fewer than 30 days of it remain, at load time and before each signature;
// leaves already issued keep chaining to the root through the intermediate
// they carry.
//
// LoadOrCreate keeps the CA in a directory (mode 0700):
//
//	root.pem               root certificate
//	root_key.pem           root key, PKCS#8 PEM, mode 0600
//	intermediate.pem       intermediate certificate
//	intermediate_key.pem   intermediate key, PKCS#8 PEM, mode 0600
//
// and refuses a directory whose root belongs to another trust domain. New
// keeps everything in memory, for tests and demonstrations.
//
// # Signing
//
// Leaves are built with smallstep's x509util templates: the JSON template in
// leafTemplate writes the SPIFFE ID as the only URI SAN, DNS names (gateway
// certificates only), the Subject (CN = last path segment of the ID, one OU
// per group), key usage digitalSignature and extended key usages serverAuth
// and clientAuth. The caller hands the CA a public key, not a CSR (the CSR's
// proof of possession is checked where it arrives, by pki.ParseCSR), so the
// template input comes from x509util.NewCertificateFromX509 with a template
// certificate that holds only the public key; nothing the subject wrote ends
// up in the certificate. The CA then sets the validity window itself
// (NotBefore one minute in the past to absorb clock skew, NotAfter = now +
// TTL, capped at the intermediate's NotAfter) and signs with
// x509util.CreateCertificate, which adds a random 128-bit serial number and
// the subject key identifier.
//
// Issue refuses IDs outside the CA's trust domain or of an unknown kind, TTLs
// under pki.MinTTL, keys that are not ECDSA P-256, empty group names, and DNS
// names on anything but a gateway certificate.
package ca
