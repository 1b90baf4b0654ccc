package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres/login"
)

// agentFile is the YAML of `postern agent --config FILE` (SPEC §4).
type agentFile struct {
	Gateway   string `yaml:"gateway"`
	Name      string `yaml:"name"`
	TokenFile string `yaml:"token_file"`
	DataDir   string `yaml:"data_dir"`
	Transport string `yaml:"transport"`
	// DrainTimeout is --drain-timeout ("10s").
	DrainTimeout string             `yaml:"drain_timeout"`
	LogFormat    string             `yaml:"log_format"`
	LogLevel     string             `yaml:"log_level"`
	Services     []agentServiceFile `yaml:"services"`
}

type agentServiceFile struct {
	Name     string        `yaml:"name"`
	Protocol string        `yaml:"protocol"`
	Address  string        `yaml:"address"`
	Postgres *postgresFile `yaml:"postgres"`
	// Accepted and validated now; used by the HTTP/gRPC handlers.
	TLS *struct {
		Enabled    bool   `yaml:"enabled"`
		CAFile     string `yaml:"ca_file"`
		ServerName string `yaml:"server_name"`
	} `yaml:"tls"`
}

// postgresFile is a service's postgres section: how the agent logs in.
type postgresFile struct {
	Roles       map[string]roleFile `yaml:"roles"`
	TLS         string              `yaml:"tls"`         // disable (default) | require | verify-full
	CAFile      string              `yaml:"ca_file"`     // verify-full
	ServerName  string              `yaml:"server_name"` // verify-full; default the address's host
	CaptureRows int                 `yaml:"capture_rows"`
}

// roleFile is one role's secret: exactly one of a password from an
// environment variable, a password from a file, or a client certificate.
type roleFile struct {
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent", "agent --gateway HOST:PORT --name NAME (--token T | --token-file F) [--data-dir DIR] [--transport auto|quic|tls] [--service NAME=PROTO://HOST:PORT]... [--drain-timeout D] [--config FILE]", stderr)
	var f agentFile
	var logs logFlags
	var services listFlag
	config := fs.String("config", "", "YAML config file (flags win; --service entries add to its services)")
	token := fs.String("token", "", "join token (ignored while a valid SVID is in --data-dir)")
	fs.StringVar(&f.TokenFile, "token-file", "", "file holding the join token")
	fs.StringVar(&f.Gateway, "gateway", "127.0.0.1:8443", "gateway address")
	fs.StringVar(&f.Name, "name", "", "agent name (spiffe://TD/agent/NAME)")
	fs.StringVar(&f.DataDir, "data-dir", "./postern-agent", "where the agent keeps its SVID")
	fs.StringVar(&f.Transport, "transport", "auto", "tunnel transport: auto (QUIC, falling back to TLS), quic or tls")
	drain := fs.Duration("drain-timeout", 10*time.Second, "on SIGTERM, how long to wait for open sessions once the gateway sends no new ones (0: leave at once)")
	fs.Var(&services, "service", "service to serve, NAME=PROTO://HOST:PORT with PROTO tcp, postgres, http or grpc (repeatable)")
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("agent takes no arguments, got %q", fs.Args())
	}
	cfg := agent.Config{}
	if *config != "" {
		var file agentFile
		if err := readYAML(*config, &file); err != nil {
			return err
		}
		set := setFlags(fs)
		pick(set, "gateway", &f.Gateway, file.Gateway)
		pick(set, "name", &f.Name, file.Name)
		pick(set, "token-file", &f.TokenFile, file.TokenFile)
		pick(set, "data-dir", &f.DataDir, file.DataDir)
		pick(set, "transport", &f.Transport, file.Transport)
		if file.DrainTimeout != "" && !set["drain-timeout"] {
			d, err := time.ParseDuration(file.DrainTimeout)
			if err != nil {
				return usagef("drain_timeout %q: %v", file.DrainTimeout, err)
			}
			*drain = d
		}
		pick(set, "log-format", &logs.format, file.LogFormat)
		pick(set, "log-level", &logs.level, file.LogLevel)
		for _, s := range file.Services {
			svc, err := fileService(s, filepath.Dir(*config))
			if err != nil {
				return err
			}
			cfg.Services = append(cfg.Services, svc)
		}
	}
	for _, s := range services {
		svc, err := parseService(s)
		if err != nil {
			return usageError{err}
		}
		cfg.Services = mergeService(cfg.Services, svc)
	}
	if f.Name == "" {
		return usagef("--name is required")
	}
	if *token != "" && f.TokenFile != "" {
		return usagef("give --token or --token-file, not both")
	}
	if f.TokenFile != "" {
		data, err := os.ReadFile(f.TokenFile)
		if err != nil {
			return errorf("reading token file", err)
		}
		*token = strings.TrimSpace(string(data))
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	cfg.Gateway, cfg.Name, cfg.Token, cfg.DataDir, cfg.Transport, cfg.Logger =
		f.Gateway, f.Name, *token, f.DataDir, f.Transport, logger
	switch {
	case *drain < 0:
		return usagef("--drain-timeout must not be negative, got %s", *drain)
	case *drain == 0:
		cfg.DrainTimeout = -1 // leave at once
	default:
		cfg.DrainTimeout = *drain
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	a, err := agent.New(ctx, cfg)
	if err != nil {
		return errorf("starting agent", err)
	}
	return a.Run(ctx)
}

// parseService reads NAME=PROTO://HOST:PORT.
func parseService(s string) (agent.Service, error) {
	name, target, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return agent.Service{}, fmt.Errorf("--service %q: want NAME=PROTO://HOST:PORT", s)
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" || u.Port() == "" {
		return agent.Service{}, fmt.Errorf("--service %q: want NAME=PROTO://HOST:PORT", s)
	}
	if !protocols.ValidProtocol(u.Scheme) {
		return agent.Service{}, fmt.Errorf("--service %q: unknown protocol %q (want tcp, postgres, http or grpc)", s, u.Scheme)
	}
	return agent.Service{Name: name, Protocol: u.Scheme, Address: u.Host}, nil
}

// mergeService adds a --service entry to the services of the config file.
// An entry naming a service of the file replaces its protocol and address
// and keeps what only the file can say (its Postgres credentials), so that
// a flag can point a configured service elsewhere.
func mergeService(services []agent.Service, svc agent.Service) []agent.Service {
	for i, s := range services {
		if s.Name == svc.Name {
			services[i].Protocol, services[i].Address = svc.Protocol, svc.Address
			return services
		}
	}
	return append(services, svc)
}

// fileService reads one service of the config file. Relative paths in it
// are relative to dir, the config file's directory. Certificates and CA
// files are read now; passwords at each login, so that a rotated secret is
// picked up without a restart.
func fileService(s agentServiceFile, dir string) (agent.Service, error) {
	svc := agent.Service{Name: s.Name, Protocol: s.Protocol, Address: s.Address}
	if t := s.TLS; t != nil && t.Enabled {
		svc.TLS = &agent.UpstreamTLS{ServerName: t.ServerName}
		if t.CAFile != "" {
			pool, err := readCAFile(relTo(dir, t.CAFile))
			if err != nil {
				return svc, errorf(fmt.Sprintf("service %q: reading tls ca_file", s.Name), err)
			}
			svc.TLS.RootCAs = pool
		}
	} else if t != nil && (t.CAFile != "" || t.ServerName != "") {
		return svc, usagef("service %q: tls has ca_file or server_name but not enabled: true", s.Name)
	}
	if s.Postgres == nil {
		return svc, nil
	}
	p := s.Postgres
	opts := &agent.PostgresOptions{TLS: p.TLS, ServerName: p.ServerName, CaptureRows: p.CaptureRows,
		Roles: map[string]login.Credential{}}
	switch p.TLS {
	case "", login.TLSDisable, login.TLSRequire, login.TLSVerifyFull:
	default:
		return svc, usagef("service %q: postgres tls %q: want disable, require or verify-full", s.Name, p.TLS)
	}
	if p.CAFile != "" {
		pool, err := readCAFile(relTo(dir, p.CAFile))
		if err != nil {
			return svc, errorf(fmt.Sprintf("service %q: reading postgres ca_file", s.Name), err)
		}
		opts.RootCAs = pool
	}
	for role, r := range p.Roles {
		cred, err := roleCredential(r, dir)
		if err != nil {
			return svc, fmt.Errorf("service %q: role %q: %w", s.Name, role, err)
		}
		opts.Roles[role] = cred
	}
	svc.Postgres = opts
	return svc, nil
}

func roleCredential(r roleFile, dir string) (login.Credential, error) {
	given := 0
	for _, v := range []string{r.PasswordEnv, r.PasswordFile, r.CertFile + r.KeyFile} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return login.Credential{}, usagef("give exactly one of password_env, password_file or cert_file with key_file")
	}
	switch {
	case r.PasswordEnv != "":
		name := r.PasswordEnv
		return login.Credential{Password: func(context.Context) (string, error) {
			if v := os.Getenv(name); v != "" {
				return v, nil
			}
			return "", fmt.Errorf("environment variable %s is empty", name)
		}}, nil
	case r.PasswordFile != "":
		path := relTo(dir, r.PasswordFile)
		return login.Credential{Password: func(context.Context) (string, error) {
			data, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("reading password file: %w", err)
			}
			return strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r"), nil
		}}, nil
	}
	if r.CertFile == "" || r.KeyFile == "" {
		return login.Credential{}, usagef("cert_file and key_file go together")
	}
	cert, err := tls.LoadX509KeyPair(relTo(dir, r.CertFile), relTo(dir, r.KeyFile))
	if err != nil {
		return login.Credential{}, errorf("loading client certificate", err)
	}
	return login.Credential{Certificate: &cert}, nil
}

// relTo resolves a path of the config file against its directory.
func relTo(dir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// readCAFile reads a PEM file of CA certificates into a pool.
func readCAFile(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("no PEM certificate in %s", path)
	}
	return pool, nil
}
