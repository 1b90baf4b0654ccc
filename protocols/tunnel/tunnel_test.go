package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/pki/pkitest"
)

func TestWithDefaults(t *testing.T) {
	tests := map[string]struct {
		in   *Config
		want Config
	}{
		"nil": {
			in:   nil,
			want: Config{KeepAlive: 10 * time.Second, IdleTimeout: 30 * time.Second, HandshakeTimeout: 10 * time.Second, MaxStreams: 10000, StreamWindow: 16 << 20},
		},
		"set fields kept": {
			in:   &Config{KeepAlive: time.Second, IdleTimeout: 5 * time.Second, HandshakeTimeout: time.Second, MaxStreams: 7, StreamWindow: 1 << 20},
			want: Config{KeepAlive: time.Second, IdleTimeout: 5 * time.Second, HandshakeTimeout: time.Second, MaxStreams: 7, StreamWindow: 1 << 20},
		},
		"keepalive not below idle timeout": {
			in:   &Config{IdleTimeout: 2 * time.Second},
			want: Config{KeepAlive: time.Second, IdleTimeout: 2 * time.Second, HandshakeTimeout: 10 * time.Second, MaxStreams: 10000, StreamWindow: 16 << 20},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := tt.in.WithDefaults()
			if got.Logger == nil {
				t.Errorf("got nil Logger, want a discarding one")
			}
			got.Logger = nil
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPeerID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("postern.local")
	ca := pkitest.NewCA(t, td)
	id := spiffeid.RequireFromPath(td, "/agent/a1")
	svid := ca.SVID(t, id)

	got, err := PeerID(tls.ConnectionState{PeerCertificates: svid.Certificates})
	if err != nil {
		t.Fatalf("PeerID: %v", err)
	}
	if got != id {
		t.Errorf("got %v, want %v", got, id)
	}

	errs := map[string][]*x509.Certificate{
		"no certificate":       nil,
		"trust domain ID only": {ca.Intermediate}, // its URI SAN has no path
	}
	for name, certs := range errs {
		t.Run(name, func(t *testing.T) {
			if got, err := PeerID(tls.ConnectionState{PeerCertificates: certs}); err == nil {
				t.Errorf("got %v, want an error", got)
			}
		})
	}
}

func TestCheckConnectionState(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("postern.local")
	ca := pkitest.NewCA(t, td)
	certs := ca.SVID(t, spiffeid.RequireFromPath(td, "/gateway/gw")).Certificates
	good := tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13, NegotiatedProtocol: ALPN, PeerCertificates: certs}
	if _, err := CheckConnectionState(good); err != nil {
		t.Fatalf("CheckConnectionState: %v", err)
	}
	tests := map[string]func(*tls.ConnectionState){
		"handshake incomplete": func(cs *tls.ConnectionState) { cs.HandshakeComplete = false },
		"TLS 1.2":              func(cs *tls.ConnectionState) { cs.Version = tls.VersionTLS12 },
		"no ALPN":              func(cs *tls.ConnectionState) { cs.NegotiatedProtocol = "" },
		"other ALPN":           func(cs *tls.ConnectionState) { cs.NegotiatedProtocol = "h2" },
		"no certificate":       func(cs *tls.ConnectionState) { cs.PeerCertificates = nil },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			cs := good
			mutate(&cs)
			if id, err := CheckConnectionState(cs); err == nil {
				t.Errorf("got %v, want an error", id)
			}
		})
	}
}

func TestTLSConfig(t *testing.T) {
	got := TLSConfig(nil)
	if len(got.NextProtos) != 1 || got.NextProtos[0] != ALPN || got.MinVersion != tls.VersionTLS13 {
		t.Errorf("got NextProtos %v, MinVersion %#x; want [%s], TLS 1.3", got.NextProtos, got.MinVersion, ALPN)
	}
	in := &tls.Config{NextProtos: []string{"x"}, MinVersion: tls.VersionTLS12}
	got = TLSConfig(in)
	if got.NextProtos[0] != "x" || got.MinVersion != tls.VersionTLS13 {
		t.Errorf("got NextProtos %v, MinVersion %#x; want [x], TLS 1.3", got.NextProtos, got.MinVersion)
	}
	if in.MinVersion != tls.VersionTLS12 {
		t.Errorf("TLSConfig changed its argument")
	}
}
