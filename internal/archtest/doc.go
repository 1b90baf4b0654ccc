// Package archtest holds the tests that keep Postern's layout honest: which
// package may import which, that every package says why it exists, and that
// only cmd/ reads the environment. It has no code of its own.
package archtest
