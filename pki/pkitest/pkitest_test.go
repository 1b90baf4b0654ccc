package pkitest

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestSVIDVerifies(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("postern.local")
	ca := NewCA(t, td)
	id := spiffeid.RequireFromPath(td, "/user/alice")
	tests := map[string]struct {
		opts    []Option
		wantErr bool
	}{
		"valid":   {},
		"expired": {opts: []Option{Expired()}, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := ca.SVID(t, id, tc.opts...)
			got, _, err := x509svid.Verify(s.Certificates, ca.Bundle())
			if (err != nil) != tc.wantErr {
				t.Fatalf("got err %v, want error %v", err, tc.wantErr)
			}
			if err == nil && got != id {
				t.Fatalf("got id %v, want %v", got, id)
			}
		})
	}
}

func TestOtherCAFails(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("postern.local")
	a, b := NewCA(t, td), NewCA(t, td)
	s := a.SVID(t, spiffeid.RequireFromPath(td, "/user/alice"))
	if _, _, err := x509svid.Verify(s.Certificates, b.Bundle()); err == nil {
		t.Fatal("got nil error verifying against another CA, want an error")
	}
}
