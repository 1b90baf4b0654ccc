// Package audit writes and reads session recordings, the gateway's audit
// trail.
//
// Every session gets one append-only file, DATA/recordings/<session>.jsonl,
// holding one JSON record per line. Each record carries the SHA-256 of the
// line before it, so that a changed, removed or reordered record breaks the
// chain and Read names it. Records are versioned (the "v" field) so that
// later formats (compressed, signed, sealed) can be read next to this one.
//
// A Log is the gateway's protocols.Recorder: it buffers each session's
// records and flushes them every FlushInterval and when the session ends, so
// recording never waits on the disk for long. A recording that a crash cut
// short is closed as truncated by RecoverUnsealed at the next start.
//
// The format is described in docs/AUDIT.md.
package audit
