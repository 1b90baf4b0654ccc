package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/protocols"
)

// agentFile is the YAML of `postern agent --config FILE` (SPEC §4).
type agentFile struct {
	Gateway   string `yaml:"gateway"`
	Name      string `yaml:"name"`
	TokenFile string `yaml:"token_file"`
	DataDir   string `yaml:"data_dir"`
	Transport string `yaml:"transport"`
	LogFormat string `yaml:"log_format"`
	LogLevel  string `yaml:"log_level"`
	Services  []struct {
		Name     string `yaml:"name"`
		Protocol string `yaml:"protocol"`
		Address  string `yaml:"address"`
		// Accepted and validated now; used by the Postgres and HTTP/gRPC
		// handlers.
		Postgres *struct {
			Roles map[string]struct {
				PasswordEnv  string `yaml:"password_env"`
				PasswordFile string `yaml:"password_file"`
				CertFile     string `yaml:"cert_file"`
				KeyFile      string `yaml:"key_file"`
			} `yaml:"roles"`
			TLS         string `yaml:"tls"`
			CAFile      string `yaml:"ca_file"`
			CaptureRows int    `yaml:"capture_rows"`
		} `yaml:"postgres"`
		TLS *struct {
			Enabled    bool   `yaml:"enabled"`
			CAFile     string `yaml:"ca_file"`
			ServerName string `yaml:"server_name"`
		} `yaml:"tls"`
	} `yaml:"services"`
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent", "agent --gateway HOST:PORT --name NAME (--token T | --token-file F) [--data-dir DIR] [--transport auto|quic|tls] [--service NAME=PROTO://HOST:PORT]... [--config FILE]", stderr)
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
		pick(set, "log-format", &logs.format, file.LogFormat)
		pick(set, "log-level", &logs.level, file.LogLevel)
		for _, s := range file.Services {
			cfg.Services = append(cfg.Services, agent.Service{Name: s.Name, Protocol: s.Protocol, Address: s.Address})
		}
	}
	for _, s := range services {
		svc, err := parseService(s)
		if err != nil {
			return usageError{err}
		}
		cfg.Services = append(cfg.Services, svc)
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
