// Package replay plays a session recording back: as a transcript a person
// can read (a psql-like session for Postgres, one line per request for HTTP
// and gRPC, byte counts for TCP) or as one JSON event per line for tools,
// with the original timing or faster.
//
// It reads the recording as a stream and verifies its hash chain while it
// plays (audit.Read), so that a recording of any length replays in constant
// memory, and a broken one plays up to the break and then fails naming the
// record. `postern replay` and the auditors' web page both render with it.
package replay
