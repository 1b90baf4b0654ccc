package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/postern/postern/gateway"
	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/gateway/bearer"
)

// gatewayFile is the YAML of `postern gateway --config FILE`. A flag given
// on the command line wins over the file.
type gatewayFile struct {
	DataDir          string        `yaml:"data_dir"`
	Listen           string        `yaml:"listen"`
	OpsListen        string        `yaml:"ops_listen"`
	TrustDomain      string        `yaml:"trust_domain"`
	PublicName       string        `yaml:"public_name"`
	Policy           string        `yaml:"policy"`
	Name             string        `yaml:"name"`
	LogFormat        string        `yaml:"log_format"`
	LogLevel         string        `yaml:"log_level"`
	QUIC             *bool         `yaml:"quic"`
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	SVIDTTL          time.Duration `yaml:"svid_ttl"`
	AgentTTL         time.Duration `yaml:"agent_ttl"`
	// OIDC issuers whose JWTs HTTP and gRPC clients may present (docs/AUTH.md).
	OIDC []bearer.IssuerConfig `yaml:"oidc"`

	RecordingsURL  string `yaml:"recordings_url"`
	AuditFailOpen  *bool  `yaml:"audit_fail_open"`
	AuditMaxBuffer int    `yaml:"audit_max_buffer"`
}

func runGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("gateway", "gateway [--config FILE] [--data-dir DIR] [--listen ADDR] [--ops-listen ADDR] [--trust-domain TD] [--public-name NAME] [--policy FILE]", stderr)
	var f gatewayFile
	var logs logFlags
	var quic bool
	var oidc []bearer.IssuerConfig
	config := fs.String("config", "", "YAML config file (flags win)")
	fs.StringVar(&f.DataDir, "data-dir", "./postern-data", "data directory (CA, store, recordings)")
	fs.StringVar(&f.Listen, "listen", "127.0.0.1:8443", "TCP and UDP address for agents and clients")
	fs.StringVar(&f.OpsListen, "ops-listen", "127.0.0.1:8081", "plain HTTP address for /metrics, /healthz, /readyz (\"-\" turns it off)")
	fs.StringVar(&f.TrustDomain, "trust-domain", "postern.local", "SPIFFE trust domain")
	fs.StringVar(&f.PublicName, "public-name", "localhost", "DNS name of the gateway; services are SERVICE.NAME")
	fs.StringVar(&f.Policy, "policy", "", "policy file (reloaded when it changes; none denies everything)")
	fs.StringVar(&f.Name, "name", "gateway", "gateway name in its SPIFFE ID")
	fs.BoolVar(&quic, "quic", true, "serve QUIC tunnels on the UDP port")
	fs.DurationVar(&f.HandshakeTimeout, "handshake-timeout", 10*time.Second, "time a connection has to finish its TLS handshake")
	fs.DurationVar(&f.SVIDTTL, "svid-ttl", time.Hour, "lifetime of the gateway's own SVID")
	fs.DurationVar(&f.AgentTTL, "agent-ttl", time.Hour, "lifetime of SVIDs issued to agents")
	fs.StringVar(&f.RecordingsURL, "recordings-url", "", "blob store URL that sealed recordings are copied to (file:///DIR, s3://BUCKET?region=R)")
	var failOpen bool
	fs.BoolVar(&failOpen, "audit-fail-open", false, "let a session run when its events cannot be recorded (default: close it)")
	fs.IntVar(&f.AuditMaxBuffer, "audit-max-buffer", 0, "bytes of one session's records that may wait for the disk (default 8 MiB)")
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("gateway takes no arguments, got %q", fs.Args())
	}
	if *config != "" {
		var file gatewayFile
		if err := readYAML(*config, &file); err != nil {
			return err
		}
		set := setFlags(fs)
		pick(set, "data-dir", &f.DataDir, file.DataDir)
		pick(set, "listen", &f.Listen, file.Listen)
		pick(set, "ops-listen", &f.OpsListen, file.OpsListen)
		pick(set, "trust-domain", &f.TrustDomain, file.TrustDomain)
		pick(set, "public-name", &f.PublicName, file.PublicName)
		pick(set, "policy", &f.Policy, file.Policy)
		pick(set, "name", &f.Name, file.Name)
		pick(set, "log-format", &logs.format, file.LogFormat)
		pick(set, "log-level", &logs.level, file.LogLevel)
		pick(set, "handshake-timeout", &f.HandshakeTimeout, file.HandshakeTimeout)
		pick(set, "svid-ttl", &f.SVIDTTL, file.SVIDTTL)
		pick(set, "agent-ttl", &f.AgentTTL, file.AgentTTL)
		pick(set, "recordings-url", &f.RecordingsURL, file.RecordingsURL)
		pick(set, "audit-max-buffer", &f.AuditMaxBuffer, file.AuditMaxBuffer)
		if !set["audit-fail-open"] && file.AuditFailOpen != nil {
			failOpen = *file.AuditFailOpen
		}
		oidc = file.OIDC
		if !set["quic"] && file.QUIC != nil {
			quic = *file.QUIC
		}
	}
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil {
		return usagef("--trust-domain %q: %v", f.TrustDomain, err)
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	srv, err := gateway.New(ctx, gateway.Config{
		DataDir: f.DataDir, Listen: f.Listen, OpsListen: f.OpsListen, TrustDomain: td,
		PublicName: f.PublicName, Name: f.Name, PolicyPath: f.Policy, DisableQUIC: !quic,
		HandshakeTimeout: f.HandshakeTimeout, SVIDTTL: f.SVIDTTL, AgentTTL: f.AgentTTL, OIDC: oidc, Logger: logger,
		RecordingsURL: f.RecordingsURL, Audit: audit.Options{FailOpen: failOpen, MaxBuffer: f.AuditMaxBuffer},
	})
	if err != nil {
		return errorf("starting gateway", err)
	}
	if err := srv.Run(ctx); err != nil {
		return errorf("running gateway", err)
	}
	return nil
}

// pick sets *dst to the config file's v unless the flag was given on the
// command line or the file leaves the key out.
func pick[T comparable](set map[string]bool, flagName string, dst *T, v T) {
	var zero T
	if !set[flagName] && v != zero {
		*dst = v
	}
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// readYAML decodes a YAML file strictly: an unknown key is an error.
func readYAML(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && err != io.EOF {
		return fmt.Errorf("reading config %s: %w", path, err)
	}
	return nil
}
