// Package audit writes and reads session recordings, the gateway's audit
// trail, and proves them unaltered.
//
// Every session gets one recording: JSON records, one a line,
// DATA/recordings/<session>.open.jsonl while it is written (past its first
// 64 KiB, through a memory mapping) and <session>.jsonl.zst, in zstd frames, once sealed. Each record carries the SHA-256 of the
// line before it, so that a changed, removed or reordered record breaks the
// chain and Verify names it; the last record is a seal, an Ed25519
// signature by the gateway's audit Key over the chain's end, so that a
// chain rebuilt by someone without the key, or a recording cut short, is
// caught too. Records are versioned (the "v" field): version 1 recordings
// (uncompressed, unsealed .jsonl) still read and verify.
//
// A Log is the gateway's protocols.Recorder: an event a client may see
// answered is in the file before Record returns (tcp.data waits for the
// flush interval; a session's file is created off the data path, and its
// session.start written with it), each session's
// backlog is bounded, and a session that cannot be recorded is reported so
// the gateway can close it. Sealed recordings are compressed in the
// background and copied to a blob store Bucket when there is one; an
// Index (the store) gets a row per session. RecoverUnsealed seals what a
// crash cut short, as truncated, at the next start. An Archive is what
// auditors read: the recordings, the index and the trusted public Keys.
//
// The format is described in docs/AUDIT.md.
package audit
