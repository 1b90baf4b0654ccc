package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/postern/postern/protocols"
)

// Version is the record format this package writes.
const Version = 1

// Ext is the file name extension of a recording.
const Ext = ".jsonl"

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
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("recording broken at record %d: %s", e.Seq, e.Reason)
}

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

// Path returns the file of the session's recording under dir. It does not
// check session; see ValidSessionID.
func Path(dir, session string) string {
	return filepath.Join(dir, session+Ext)
}

// encode returns the line of r, without its newline.
func encode(r Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding record %d: %w", r.Seq, err)
	}
	return b, nil
}

// hash returns the prev value of the record after line.
func hash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}
