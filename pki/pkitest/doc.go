// Package pkitest makes in-memory certificate authorities and SVIDs for
// tests, so that no key or certificate is ever committed. It builds
// certificates with crypto/x509 directly and lets a test shape them in ways
// the real CA refuses: expired, not yet valid, of another trust domain, with
// no URI SAN.
package pkitest
