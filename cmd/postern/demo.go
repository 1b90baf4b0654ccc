package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/gateway"
	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/internal/sample"
	"github.com/postern/postern/pki"
)

const demoPolicy = `# Postern demo policy. The demo user (group demo) may reach the echo service;
# on PostgreSQL, analysts may only read, writers read and write rows, and the
# DBA may run everything. Over HTTP the demo user may GET anything on api and
# POST under /v1/orders; over gRPC it may make unary calls and use health and
# reflection, nothing else.
rules:
  - name: demo-users
    identities: [group:demo]
    services: [echo]
  - name: demo-api
    identities: [group:demo]
    services: [api]
    http:
      - methods: [GET, HEAD]
        paths: ["/**"]
      - methods: [POST]
        paths: ["/v1/orders/**"]
        rate: 10/s
  - name: demo-grpc
    identities: [group:demo]
    services: [orders]
    grpc:
      - methods: ["/grpc.testing.TestService/UnaryCall", "/grpc.health.v1.Health/*", "/grpc.reflection.*/*"]
  - name: analysts-read
    identities: [group:analysts]
    services: [pg]
    postgres:
      databases: [postgres]
      users: [postgres]
      statements: [read]
  - name: writers
    identities: [group:writers]
    services: [pg]
    postgres:
      databases: [postgres]
      users: [postgres]
      statements: [read, write]
  - name: dba-all
    identities: [group:dba]
    services: [pg]
`

// demoIdentities are the demo's users: name, group.
var demoIdentities = [][2]string{{"demo", "demo"}, {"analyst", "analysts"}, {"writer", "writers"}, {"dba", "dba"}}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "demo [--listen ADDR] [--ops-listen ADDR] [--data-dir DIR]", stderr)
	listen := fs.String("listen", "127.0.0.1:8443", "gateway address (a free port is used when this one is taken)")
	ops := fs.String("ops-listen", "127.0.0.1:8081", "ops address (a free port is used when this one is taken)")
	dir := fs.String("data-dir", "", "where to keep the demo's files (default: a new temporary directory)")
	var logs logFlags
	logs.register(fs)
	logs.level = "warn"
	if err := parse(fs, args); err != nil {
		return err
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "postern-demo-"); err != nil {
			return errorf("making demo dir", err)
		}
	}
	gwDir, agentDir, userDir := filepath.Join(*dir, "gateway"), filepath.Join(*dir, "agent"), filepath.Join(*dir, "demo")
	policyPath := filepath.Join(*dir, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte(demoPolicy), 0o644); err != nil {
		return errorf("writing demo policy", err)
	}

	echo, err := startEcho(ctx)
	if err != nil {
		return errorf("starting echo service", err)
	}
	defer echo.Close()
	api, err := listenSample(ctx, sample.ServeHTTP)
	if err != nil {
		return errorf("starting HTTP sample service", err)
	}
	orders, err := listenSample(ctx, func(ctx context.Context, ln net.Listener) error { return sample.ServeGRPC(ctx, ln) })
	if err != nil {
		return errorf("starting gRPC sample service", err)
	}
	services := []agent.Service{{Name: "echo", Protocol: "tcp", Address: echo.Addr().String()},
		{Name: "api", Protocol: "http", Address: api}, {Name: "orders", Protocol: "grpc", Address: orders}}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:5432", 500*time.Millisecond); err == nil {
		c.Close()
		services = append(services, agent.Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:5432"})
	}

	srv, err := gateway.New(ctx, gateway.Config{DataDir: gwDir, Listen: freeIfTaken(*listen),
		OpsListen: freeIfTaken(*ops), PolicyPath: policyPath, Logger: logger})
	if err != nil {
		return errorf("starting gateway", err)
	}
	if err := srv.Listen(); err != nil {
		return errorf("starting gateway", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gwDone := make(chan error, 1)
	go func() { gwDone <- srv.Run(ctx) }()
	addr := srv.Addr().String()

	token, _, err := srv.Data().MintToken("demo-agent", 0)
	if err != nil {
		return errorf("minting join token", err)
	}
	user := spiffeid.RequireFromPath(srv.Data().CA.TrustDomain(), "/user/demo")
	dirs := map[string]string{}
	for _, u := range demoIdentities {
		id := spiffeid.RequireFromPath(srv.Data().CA.TrustDomain(), "/user/"+u[0])
		svid, err := srv.Data().Issue(ctx, pki.IssueRequest{ID: id, Groups: []string{u[1]}})
		if err != nil {
			return errorf("issuing demo identity", err)
		}
		dirs[u[0]] = filepath.Join(*dir, u[0])
		if err := pki.WriteFiles(dirs[u[0]], svid, srv.Data().CA.Roots()); err != nil {
			return errorf("writing demo identity", err)
		}
	}
	ag, err := agent.New(ctx, agent.Config{Gateway: addr, Name: "demo-agent", Token: token, DataDir: agentDir,
		Services: services, Logger: logger})
	if err != nil {
		return errorf("starting agent", err)
	}
	agDone := make(chan error, 1)
	go func() { agDone <- ag.Run(ctx) }()
	var transport string
	select {
	case transport = <-ag.Connected():
	case <-time.After(15 * time.Second):
		return fmt.Errorf("starting demo: the agent did not connect within 15s")
	case <-ctx.Done():
		return nil
	}

	self, _ := os.Executable()
	if self == "" {
		self = "postern"
	}
	_, port, _ := net.SplitHostPort(addr)
	w := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	w("Postern demo is up (Ctrl-C to stop).")
	w("  gateway   %s (tcp+udp), ops http://%s/metrics", addr, srv.OpsAddr())
	w("  agent     demo-agent over %s, serving: %s", transport, serviceList(services))
	w("  identity  %s (group demo) in %s; analyst, writer and dba beside it", user, userDir)
	w("  policy    %s (edit it: changes apply at once)", policyPath)
	w("")
	w("Reach the echo service with your SVID (type a line, it comes back):")
	w("  openssl s_client -quiet -connect %s -servername echo.localhost -cert %s/svid.pem -key %s/svid_key.pem -CAfile %s/svid_bundle.pem", addr, userDir, userDir, userDir)
	w("")
	w("Or through a local plaintext port:")
	w("  %s connect echo --listen 127.0.0.1:15000 --gateway %s --identity %s", self, addr, userDir)
	w("  nc 127.0.0.1 15000")
	tlsFiles := fmt.Sprintf("--cacert %s/svid_bundle.pem --cert %s/svid.pem --key %s/svid_key.pem", userDir, userDir, userDir)
	w("")
	w("The HTTP service (every request decided by path and method; the upstream sees who called in")
	w("the Postern-Jwt-Assertion header; the keys are at https://localhost:%s/.well-known/postern/jwks.json):", port)
	w("  curl %s https://api.localhost:%s/v1/orders/7", tlsFiles, port)
	w("  curl %s -X DELETE https://api.localhost:%s/v1/orders/7     # 403, names the rule", tlsFiles, port)
	w("The gRPC service (every call decided by method):")
	grpcFiles := fmt.Sprintf("-cacert %s/svid_bundle.pem -cert %s/svid.pem -key %s/svid_key.pem -servername orders.localhost", userDir, userDir, userDir)
	w("  grpcurl %s %s list", grpcFiles, addr)
	w("  grpcurl %s -d '{\"payload\":{\"body\":\"aGk=\"}}' %s grpc.testing.TestService/UnaryCall", grpcFiles, addr)
	w("  grpcurl %s %s grpc.testing.TestService/EmptyCall            # PermissionDenied, names the rule", grpcFiles, addr)
	w("  (grpcurl: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4)")
	w("Machines without an SVID use an API key: %s apikey create --data-dir %s --id spiffe://postern.local/workload/bot --group demo", self, gwDir)
	w("  curl --cacert %s/svid_bundle.pem -H \"Authorization: Bearer KEY\" https://api.localhost:%s/v1/orders/7", userDir, port)
	if len(services) > 3 {
		w("")
		w("PostgreSQL on 127.0.0.1:5432, through the tunnel: no database password on the client, every statement")
		w("decided by policy. The analyst may only read (try a CREATE TABLE: ERROR 42501), the writer may change")
		w("rows, the DBA may run everything:")
		for _, u := range demoIdentities[1:] {
			d := dirs[u[0]]
			w("  psql \"host=pg.localhost hostaddr=127.0.0.1 port=%s sslmode=verify-full sslrootcert=%s/svid_bundle.pem sslcert=%s/svid.pem sslkey=%s/svid_key.pem user=postgres dbname=postgres\"", port, d, d, d)
		}
		w("Or, for clients without certificates (sslmode=disable on the local side):")
		w("  %s connect pg --listen 127.0.0.1:15432 --gateway %s --identity %s", self, addr, dirs["analyst"])
		w("  psql \"host=127.0.0.1 port=15432 user=postgres dbname=postgres sslmode=disable\"")
	}
	w("")
	w("Every session is recorded, sealed and indexed under %s. Auditors:", srv.Data().RecordingsPath())
	w("  %s audit list --data-dir %s", self, gwDir)
	w("  %s audit verify --data-dir %s", self, gwDir)
	w("  %s audit ui --data-dir %s --listen 127.0.0.1:8082    # then open http://127.0.0.1:8082/", self, gwDir)
	w("Each session you make is announced below with the command that replays it.")
	w("Mint more: %s token create --data-dir %s --name NAME; %s identity issue --data-dir %s --id spiffe://postern.local/user/NAME --group demo --out DIR", self, gwDir, self, gwDir)
	go announceSessions(ctx, stdout, srv.Data().Store, time.Now(), fmt.Sprintf("%s replay --data-dir %s --speed 0", self, gwDir))

	select {
	case <-ctx.Done():
	case err := <-gwDone:
		if err != nil {
			return errorf("running gateway", err)
		}
	}
	cancel()
	<-agDone
	<-gwDone
	return nil
}

// announceSessions prints, until ctx is done, one line for each session
// sealed since since, with the command that replays it.
func announceSessions(ctx context.Context, w io.Writer, idx audit.Lister, since time.Time, replay string) {
	seen := map[string]bool{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rows, err := idx.Sessions(ctx, store.SessionFilter{Since: since})
		if err != nil {
			continue
		}
		for i := len(rows) - 1; i >= 0; i-- { // oldest first
			r := rows[i]
			if r.Status != audit.StatusSealed || seen[r.ID] {
				continue
			}
			seen[r.ID] = true
			who := r.Identity
			if who == "" {
				who = "(unauthenticated)"
			}
			fmt.Fprintf(w, "recorded: %s → %s (%s, %s): %s %s\n", who, r.Service, r.Protocol, r.Outcome, replay, r.ID)
		}
	}
}

func serviceList(s []agent.Service) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += x.Name + "=" + x.Protocol + "://" + x.Address
	}
	return out
}

// freeIfTaken returns addr when it can be bound, and an ephemeral port on
// the same host otherwise.
func freeIfTaken(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		host, _, _ := net.SplitHostPort(addr)
		return net.JoinHostPort(host, "0")
	}
	ln.Close()
	return addr
}

// listenSample runs a sample service on an ephemeral loopback port until
// ctx is done and returns its address.
func listenSample(ctx context.Context, serve func(context.Context, net.Listener) error) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go serve(ctx, ln)
	return ln.Addr().String(), nil
}

// startEcho runs the demo's TCP echo service on an ephemeral port.
func startEcho(ctx context.Context) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln, nil
}
