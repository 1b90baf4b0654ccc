package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseService(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    string // NAME PROTO ADDR
		wantErr string
	}{
		"tcp":            {in: "echo=tcp://127.0.0.1:7000", want: "echo tcp 127.0.0.1:7000"},
		"postgres":       {in: "pg=postgres://127.0.0.1:5432", want: "pg postgres 127.0.0.1:5432"},
		"no name":        {in: "=tcp://127.0.0.1:1", wantErr: "NAME=PROTO"},
		"no port":        {in: "echo=tcp://127.0.0.1", wantErr: "NAME=PROTO"},
		"bad protocol":   {in: "echo=udp://127.0.0.1:53", wantErr: `unknown protocol "udp"`},
		"no equals sign": {in: "echo", wantErr: "NAME=PROTO"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := parseService(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if got := s.Name + " " + s.Protocol + " " + s.Address; err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestConfigFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	os.WriteFile(path, []byte("listen: 127.0.0.1:9443\nhandshake_timeout: 3s\npublic_name: gw.example\n"), 0o644)
	var file gatewayFile
	if err := readYAML(path, &file); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8443", "")
	public := fs.String("public-name", "localhost", "")
	timeout := fs.Duration("handshake-timeout", 10*time.Second, "")
	fs.Parse([]string{"--public-name", "flag.example"})
	set := setFlags(fs)
	pick(set, "listen", listen, file.Listen)
	pick(set, "public-name", public, file.PublicName)
	pick(set, "handshake-timeout", timeout, file.HandshakeTimeout)
	if *listen != "127.0.0.1:9443" || *public != "flag.example" || *timeout != 3*time.Second {
		t.Fatalf("got listen %s public %s timeout %s; want the file's listen and timeout and the flag's name", *listen, *public, *timeout)
	}

	os.WriteFile(path, []byte("listen: 127.0.0.1:9443\nlisen: typo\n"), 0o644)
	if err := readYAML(path, &file); err == nil || !strings.Contains(err.Error(), "lisen") {
		t.Fatalf("got %v, want an error naming the unknown key", err)
	}
}

func TestExitCodes(t *testing.T) {
	tests := map[string]struct {
		args []string
		want int
	}{
		"no command":      {nil, 2},
		"unknown command": {[]string{"frobnicate"}, 2},
		"bad flag":        {[]string{"version", "--nope"}, 2},
		"help":            {[]string{"version", "--help"}, 0},
		"version":         {[]string{"version"}, 0},
		"runtime failure": {[]string{"policy", "check", "/nonexistent/policy.yaml"}, 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			if got := exitCode(err, &stderr); got != tc.want {
				t.Fatalf("got exit %d, want %d (stderr %q)", got, tc.want, stderr.String())
			}
			if tc.want != 0 && !strings.Contains(stderr.String(), "postern: ") {
				t.Fatalf("stderr %q has no one-line 'postern: ' error", stderr.String())
			}
		})
	}
}
