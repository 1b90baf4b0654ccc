package gateway

import (
	"context"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestStatelessResetKey: a data dir gives the same QUIC stateless reset key
// each time it is opened, and another data dir another key.
func TestStatelessResetKey(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("postern.local")
	key := func(dir string) [32]byte {
		d, err := OpenDataDir(context.Background(), dir, td)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		k, err := d.StatelessResetKey()
		if err != nil {
			t.Fatal(err)
		}
		return *k
	}
	dir := t.TempDir()
	first, again, other := key(dir), key(dir), key(t.TempDir())
	if first != again {
		t.Error("the key changed when the data dir was opened again")
	}
	if first == other {
		t.Error("two data dirs gave the same key")
	}
	if first == ([32]byte{}) {
		t.Error("the key is zero")
	}
}
