package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/protocols"
)

// Version is the record format this package writes. Version 1 recordings
// (uncompressed, unsealed) are still read and verified.
const Version = 2

// File name extensions of recordings. A recording is written as
// <session>.open.jsonl (JSON lines, not compressed) and, once sealed,
// compressed into <session>.jsonl.zst; <session>.jsonl is a version 1
// recording. Gateways before the memory-mapped writer wrote open
// recordings compressed, as <session>.open.jsonl.zst (OpenExtZst); they
// are still read and recovered.
const (
	Ext        = ".jsonl.zst"
	OpenExt    = ".open.jsonl"
	OpenExtZst = ".open.jsonl.zst"
	ExtV1      = ".jsonl"
)

// MaxRecordSize is the longest record line Read accepts, in bytes.
const MaxRecordSize = 16 << 20

// OutcomeTruncated is the outcome of a session whose recording was cut short.
const OutcomeTruncated = protocols.OutcomeTruncated

// maxSessionIDLen bounds session ids, which become file names.
const maxSessionIDLen = 128

// Record is one line of a recording: the compact JSON encoding of this
// struct, fields in this order.
type Record struct {
	V       int                 `json:"v"`
	Seq     int64               `json:"seq"`
	Time    time.Time           `json:"time"`
	Session string              `json:"session"`
	Type    protocols.EventType `json:"type"`
	Data    json.RawMessage     `json:"data"`
	Prev    string              `json:"prev"` // hex SHA-256 of the previous line, "" for seq 0
}

// ChainError reports the first record of a recording that fails
// verification. Seq is the position of that record (its expected seq).
type ChainError struct {
	Seq    int
	Reason string
	err    error
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("recording broken at record %d: %s", e.Seq, e.Reason)
}

// Unwrap returns the cause, if there is one (ErrUnsealed, a decompression
// error).
func (e *ChainError) Unwrap() error { return e.err }

// ValidSessionID reports whether id may name a recording: 1 to 128 of
// A-Z, a-z, 0-9, '-' and '_'.
func ValidSessionID(id string) bool {
	if id == "" || len(id) > maxSessionIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Path returns the file of the session's sealed recording under dir. It
// does not check session; see ValidSessionID.
func Path(dir, session string) string {
	return filepath.Join(dir, session+Ext)
}

// OpenPath returns the file of the session's recording under dir while it
// is being written.
func OpenPath(dir, session string) string {
	return filepath.Join(dir, session+OpenExt)
}

// Kind is what a recording's file name says it is.
type Kind int

// Kinds of recording files.
const (
	NotRecording Kind = iota
	Sealed            // <session>.jsonl.zst: version 2, should be sealed
	Unsealed          // <session>.open.jsonl: version 2, being written, cut short, or sealed and being compressed
	V1                // <session>.jsonl: version 1
)

// ParseName returns the session and kind of a recording's file name.
func ParseName(name string) (string, Kind) {
	name = filepath.Base(name)
	for _, c := range []struct {
		ext  string
		kind Kind
	}{{OpenExt, Unsealed}, {OpenExtZst, Unsealed}, {Ext, Sealed}, {ExtV1, V1}} {
		if id, ok := strings.CutSuffix(name, c.ext); ok {
			if ValidSessionID(id) {
				return id, c.kind
			}
			return "", NotRecording
		}
	}
	return "", NotRecording
}

// encode returns the line of r, without its newline.
func encode(r Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding record %d: %w", r.Seq, err)
	}
	return b, nil
}

// appendLine appends the line of r with prev as its Prev to b, byte for
// byte what encode returns, without reflection and without compacting
// r.Data again: r.Data must be what json.Marshal made (compact,
// HTML-escaped), and prev empty or a chainHash's (hex, needing no escape);
// r.Prev is not used. Other fields that would need escaping fall back to
// encode. The writer uses it; readers check lines against encode, so a
// difference would show as a broken chain in tests.
func appendLine(b []byte, r Record, prev []byte) ([]byte, error) {
	if !plainJSONString(r.Session) || !plainJSONString(string(r.Type)) ||
		r.Time.Year() < 0 || r.Time.Year() > 9999 {
		r.Prev = string(prev)
		line, err := encode(r)
		return append(b, line...), err
	}
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(r.V), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, r.Seq, 10)
	b = append(b, `,"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","session":"`...)
	b = append(b, r.Session...)
	b = append(b, `","type":"`...)
	b = append(b, r.Type...)
	b = append(b, `","data":`...)
	if len(r.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, r.Data...)
	}
	b = append(b, `,"prev":"`...)
	b = append(b, prev...)
	return append(b, `"}`...), nil
}

// plainJSONString reports whether encoding/json writes s as itself between
// quotes: printable ASCII without '"', '\\', '<', '>' or '&'.
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// chainHash is the prev value of the next record of a chain, kept without
// an allocation per record: empty before the first record, then the hex
// SHA-256 of the last line.
type chainHash struct {
	hex [2 * sha256.Size]byte
	set bool
}

// after makes h the prev value of the record after line.
func (h *chainHash) after(line []byte) {
	sum := sha256.Sum256(line)
	hex.Encode(h.hex[:], sum[:])
	h.set = true
}

// bytes returns h as it is written in a record: nil before the first one.
func (h *chainHash) bytes() []byte {
	if !h.set {
		return nil
	}
	return h.hex[:]
}

// String returns h as a record's Prev field.
func (h *chainHash) String() string { return string(h.bytes()) }
