package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/agent"
)

// writeCertPair writes a self-signed certificate and its key as PEM files.
func writeCertPair(t *testing.T, dir, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// TestAgentPostgresSection: the YAML postgres section becomes
// PostgresOptions, with secrets read at login time and paths relative to
// the config file.
func TestAgentPostgresSection(t *testing.T) {
	dir := t.TempDir()
	writeCertPair(t, dir, "dba")
	path := filepath.Join(dir, "agent.yaml")
	os.WriteFile(path, []byte(`gateway: 127.0.0.1:8443
name: db1
services:
  - name: pg
    protocol: postgres
    address: 127.0.0.1:5432
    postgres:
      roles:
        readonly: {password_env: POSTERN_TEST_RO_PASSWORD}
        app: {password_file: app.password}
        dba: {cert_file: dba.crt, key_file: dba.key}
      tls: verify-full
      ca_file: dba.crt
      server_name: db.internal
      capture_rows: 7
  - name: echo
    protocol: tcp
    address: 127.0.0.1:7000
`), 0o644)
	os.WriteFile(filepath.Join(dir, "app.password"), []byte("first secret\n"), 0o600)
	t.Setenv("POSTERN_TEST_RO_PASSWORD", "ro secret")

	var file agentFile
	if err := readYAML(path, &file); err != nil {
		t.Fatal(err)
	}
	var services []agent.Service
	for _, s := range file.Services {
		svc, err := fileService(s, dir)
		if err != nil {
			t.Fatal(err)
		}
		services = append(services, svc)
	}
	if services[1].Postgres != nil {
		t.Errorf("the tcp service got postgres options")
	}
	o := services[0].Postgres
	if o == nil || o.TLS != "verify-full" || o.RootCAs == nil || o.ServerName != "db.internal" || o.CaptureRows != 7 || len(o.Roles) != 3 {
		t.Fatalf("got %+v, want verify-full with a CA pool, db.internal, 7 rows and 3 roles", o)
	}
	ctx := context.Background()
	password := func(role string) (string, error) {
		t.Helper()
		c := o.Roles[role]
		if c.Password == nil || c.Certificate != nil {
			t.Fatalf("role %s: got %+v, want a password only", role, c)
		}
		return c.Password(ctx)
	}
	if got, err := password("readonly"); got != "ro secret" || err != nil {
		t.Errorf("readonly: got %q, %v; want the env var's value", got, err)
	}
	if got, err := password("app"); got != "first secret" || err != nil {
		t.Errorf("app: got %q, %v; want the file without its newline", got, err)
	}
	os.WriteFile(filepath.Join(dir, "app.password"), []byte("rotated\r\n"), 0o600)
	if got, err := password("app"); got != "rotated" || err != nil {
		t.Errorf("app after rotation: got %q, %v; want the new secret", got, err)
	}
	t.Setenv("POSTERN_TEST_RO_PASSWORD", "")
	if _, err := password("readonly"); err == nil || !strings.Contains(err.Error(), "POSTERN_TEST_RO_PASSWORD is empty") {
		t.Errorf("readonly with the env var empty: got %v, want an error naming it", err)
	}
	os.Remove(filepath.Join(dir, "app.password"))
	if _, err := password("app"); err == nil {
		t.Error("app with the file gone: got no error")
	}
	if c := o.Roles["dba"]; c.Certificate == nil || c.Password != nil || len(c.Certificate.Certificate) != 1 {
		t.Errorf("dba: got %+v, want the certificate only", c)
	}

	// A --service entry of the same name moves the service and keeps the
	// file's credentials; another name adds a service.
	merged := mergeService(services, agent.Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:6543"})
	merged = mergeService(merged, agent.Service{Name: "pg2", Protocol: "postgres", Address: "127.0.0.1:6544"})
	if len(merged) != 3 || merged[0].Address != "127.0.0.1:6543" || merged[0].Postgres != o || merged[2].Name != "pg2" || merged[2].Postgres != nil {
		t.Fatalf("got %+v, want pg moved with its credentials, echo, and pg2 without", merged)
	}
}

// TestAgentBadPostgresConfig: mistakes in the postgres section are usage
// errors (exit 2), found before the agent starts.
func TestAgentBadPostgresConfig(t *testing.T) {
	tests := map[string]struct {
		section string
		want    int
		inErr   string
	}{
		"two secrets":           {section: "roles: {app: {password_env: X, password_file: app.password}}", want: 2, inErr: "exactly one"},
		"password and cert":     {section: "roles: {app: {password_env: X, cert_file: a.crt, key_file: a.key}}", want: 2, inErr: "exactly one"},
		"no secret":             {section: "roles: {app: {}}", want: 2, inErr: "exactly one"},
		"cert without key":      {section: "roles: {app: {cert_file: a.crt}}", want: 2, inErr: "go together"},
		"bad tls mode":          {section: "tls: prefer", want: 2, inErr: `tls "prefer"`},
		"verify-full, no CA":    {section: "tls: verify-full", want: 2, inErr: "verify-full needs"},
		"negative capture rows": {section: "capture_rows: -1", want: 2, inErr: "negative"},
		"unknown key":           {section: "passwrd: x", want: 1, inErr: "passwrd"},
		"missing cert file":     {section: "roles: {dba: {cert_file: none.crt, key_file: none.key}}", want: 1, inErr: "loading client certificate"},
		"missing ca file":       {section: "tls: verify-full\n      ca_file: none.crt", want: 1, inErr: "ca_file"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "agent.yaml")
			os.WriteFile(path, []byte("name: db1\nservices:\n  - name: pg\n    protocol: postgres\n    address: 127.0.0.1:5432\n    postgres:\n      "+tc.section+"\n"), 0o644)
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"agent", "--config", path, "--data-dir", filepath.Join(dir, "data")}, &stdout, &stderr)
			if got := exitCode(err, &stderr); got != tc.want || !strings.Contains(stderr.String(), tc.inErr) {
				t.Fatalf("got exit %d, stderr %q; want %d and %q", got, stderr.String(), tc.want, tc.inErr)
			}
		})
	}
}

// TestAgentPostgresOptionsOnTCP: a postgres section on a service that a
// flag turns into tcp is refused.
func TestAgentPostgresOptionsOnTCP(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	os.WriteFile(path, []byte("name: db1\nservices:\n  - name: pg\n    protocol: postgres\n    address: 127.0.0.1:5432\n    postgres: {tls: require}\n"), 0o644)
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"agent", "--config", path, "--service", "pg=tcp://127.0.0.1:5432"}, &stdout, &stderr)
	if got := exitCode(err, &stderr); got != 2 || !strings.Contains(stderr.String(), "postgres options on a tcp service") {
		t.Fatalf("got exit %d, stderr %q; want 2", got, stderr.String())
	}
}

// TestAgentBadDrainTimeout: a negative --drain-timeout, or a drain_timeout
// that is not a duration, is a usage error found before the agent starts.
func TestAgentBadDrainTimeout(t *testing.T) {
	tests := map[string]struct {
		flag, yaml string
		inErr      string
	}{
		"negative flag":  {flag: "-1s", inErr: "must not be negative"},
		"not a duration": {yaml: "drain_timeout: soon\n", inErr: `drain_timeout "soon"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "agent.yaml")
			os.WriteFile(path, []byte("name: db1\n"+tc.yaml), 0o644)
			args := []string{"agent", "--config", path, "--data-dir", filepath.Join(dir, "data")}
			if tc.flag != "" {
				args = append(args, "--drain-timeout", tc.flag)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), args, &stdout, &stderr)
			if got := exitCode(err, &stderr); got != 2 || !strings.Contains(stderr.String(), tc.inErr) {
				t.Fatalf("got exit %d, stderr %q; want 2 and %q", got, stderr.String(), tc.inErr)
			}
		})
	}
}
