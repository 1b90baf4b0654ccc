package postgres

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"sync"
)

// CancelFunc sends a CancelRequest for a real backend key to the server a
// session runs on.
type CancelFunc func(ctx context.Context, real CancelKey) error

// Keys maps the backend keys the gateway hands to clients to the real keys
// of the sessions' server backends. A client never sees a real key: a
// CancelRequest is honoured only when it carries a key of a live session,
// and then reaches exactly that session's backend. Keys is safe for
// concurrent use.
type Keys struct {
	mu sync.Mutex
	m  map[uint32]*keyEntry
}

type keyEntry struct {
	secret []byte
	real   CancelKey
	cancel CancelFunc
}

// NewKeys returns an empty key map.
func NewKeys() *Keys { return &Keys{m: map[uint32]*keyEntry{}} }

// add registers a session's real key and returns the key to give its
// client, and a func that forgets it.
func (k *Keys) add(real CancelKey, cancel CancelFunc) (CancelKey, func()) {
	secret := make([]byte, 4) // protocol 3.0 keys are four bytes
	rand.Read(secret)
	k.mu.Lock()
	defer k.mu.Unlock()
	var pid uint32
	for {
		var b [4]byte
		rand.Read(b[:])
		pid = binary.BigEndian.Uint32(b[:]) & 0x7fffffff
		if _, taken := k.m[pid]; pid != 0 && !taken {
			break
		}
	}
	k.m[pid] = &keyEntry{secret: secret, real: real, cancel: cancel}
	return CancelKey{PID: pid, Secret: secret}, func() {
		k.mu.Lock()
		delete(k.m, pid)
		k.mu.Unlock()
	}
}

// Cancel looks up a key a client sent and, when it belongs to a live
// session, sends the cancel to that session's backend. It reports whether
// the key was known.
func (k *Keys) Cancel(ctx context.Context, key CancelKey) (bool, error) {
	k.mu.Lock()
	e, ok := k.m[key.PID]
	k.mu.Unlock()
	if !ok || subtle.ConstantTimeCompare(e.secret, key.Secret) != 1 {
		return false, nil
	}
	return true, e.cancel(ctx, e.real)
}

// Len returns the number of live sessions with keys.
func (k *Keys) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}
