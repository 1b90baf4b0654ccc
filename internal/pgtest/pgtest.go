package pgtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Roles and database of every cluster.
const (
	Superuser = "postgres"   // trust
	CertUser  = "cert_user"  // client certificate, over TLS only
	ScramUser = "scram_user" // scram-sha-256
	MD5User   = "md5_user"   // md5, its password stored as an md5 hash
	ClearUser = "clear_user" // cleartext password
	Database  = "app"        // owned by postgres; table items, readable by the four roles
)

// Items are the rows of app's table items, by id.
var Items = map[int]string{1: "apple", 2: "banana", 3: "cherry"}

// Cluster is one running private PostgreSQL cluster.
type Cluster struct {
	Addr      string            // "127.0.0.1:PORT"
	Passwords map[string]string // ScramUser, MD5User and ClearUser's passwords
	Dir       string            // the data directory

	CAFile string         // PEM of the CA that signed the server's and cert_user's certificates
	CA     *x509.CertPool // that CA, to verify the server with (verify-full)
	// ClientCert is cert_user's client certificate (CN=cert_user), signed
	// by the CA the server trusts (ssl_ca_file); the same in PEM files.
	ClientCert                    tls.Certificate
	ClientCertFile, ClientKeyFile string

	cmd      *exec.Cmd
	exited   chan struct{}
	log      string
	stopOnce sync.Once
}

// Start starts a private cluster, copied from this test binary's template,
// and stops and removes it when the test ends. It fails the test when
// PostgreSQL is not installed or does not start.
func Start(t testing.TB) *Cluster {
	t.Helper()
	tp := loadTemplate()
	if tp.err != nil {
		t.Fatalf("pgtest: %v", tp.err)
	}
	dir := filepath.Join(tp.root, fmt.Sprintf("cluster-%d", tp.seq.Add(1)))
	if err := copyDir(tp.dir, dir, tp.owner); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("pgtest: copying template cluster: %v", err)
	}
	c := &Cluster{
		Passwords:      maps.Clone(tp.passwords),
		Dir:            dir,
		CAFile:         tp.caFile,
		CA:             tp.ca,
		ClientCert:     tp.clientCert,
		ClientCertFile: tp.clientCertFile,
		ClientKeyFile:  tp.clientKeyFile,
	}
	if err := tp.start(c); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		c.Stop()
		os.RemoveAll(dir)
	})
	return c
}

// Stop stops the cluster at once (immediate shutdown). Start's cleanup
// calls it; a test may call it earlier to see the server go away.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		c.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-c.exited
		}
	})
}

// template is the initdb'd and set-up data directory that every cluster of
// this test binary is copied from.
type template struct {
	err   error
	bin   string // directory of initdb and postgres
	root  string // this binary's directory: template, clusters, client files
	dir   string // the template's data directory
	owner *syscall.Credential

	passwords                     map[string]string
	caFile                        string
	ca                            *x509.CertPool
	clientCert                    tls.Certificate
	clientCertFile, clientKeyFile string
	seq                           atomic.Int64
}

var (
	templateOnce sync.Once
	theTemplate  *template
)

func loadTemplate() *template {
	templateOnce.Do(func() {
		theTemplate = &template{}
		theTemplate.err = theTemplate.build()
	})
	return theTemplate
}

const dirPrefix = "postern-pgtest-"

func (tp *template) build() error {
	bin, err := findBin()
	if err != nil {
		return err
	}
	tp.bin = bin
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root needs a user postgres to run the cluster as: %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		tp.owner = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	sweep()
	if tp.root, err = os.MkdirTemp("", dirPrefix+strconv.Itoa(os.Getpid())+"-"); err != nil {
		return fmt.Errorf("making directory: %w", err)
	}
	// The clusters' owner must get through to its data directories.
	if err := os.Chmod(tp.root, 0o755); err != nil {
		return fmt.Errorf("making directory: %w", err)
	}
	tp.dir = filepath.Join(tp.root, "template")
	if err := tp.mkdir(tp.dir); err != nil {
		return err
	}
	out, err := tp.command(filepath.Join(bin, "initdb"), "-D", tp.dir, "-U", Superuser, "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		return fmt.Errorf("running initdb: %w: %s", err, out)
	}
	if err := tp.writeCerts(); err != nil {
		return fmt.Errorf("writing certificates: %w", err)
	}
	if err := tp.writeConfig(); err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}
	c := &Cluster{Dir: tp.dir}
	if err := tp.start(c); err != nil {
		return fmt.Errorf("starting template cluster: %w", err)
	}
	err = tp.setUp(c)
	// A fast (clean) shutdown, so that the copies start without recovery.
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
		if err == nil {
			err = errors.New("stopping template cluster: timed out")
		}
	}
	return err
}

// findBin returns the directory of the newest installed PostgreSQL.
func findBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	var found []string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			found = append(found, d)
		}
	}
	if len(found) > 0 {
		version := func(d string) int {
			v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
			return int(v * 100)
		}
		slices.SortFunc(found, func(a, b string) int { return version(a) - version(b) })
		return found[len(found)-1], nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL is not installed: no initdb under /usr/lib/postgresql/*/bin or on the PATH (install postgresql, e.g. apt-get install postgresql)")
}

// sweep removes what test binaries that are gone left behind.
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), dirPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

func (tp *template) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if tp.owner != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tp.owner}
	}
	return cmd
}

func (tp *template) mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("making directory: %w", err)
	}
	return tp.chown(dir)
}

func (tp *template) chown(path string) error {
	if tp.owner == nil {
		return nil
	}
	if err := os.Lchown(path, int(tp.owner.Uid), int(tp.owner.Gid)); err != nil {
		return fmt.Errorf("handing %s to the cluster's user: %w", path, err)
	}
	return nil
}

// writeFile writes a file of the cluster (owned by its user).
func (tp *template) writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	return tp.chown(path)
}

func (tp *template) writeConfig() error {
	conf, err := os.OpenFile(filepath.Join(tp.dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = io.WriteString(conf, `
# pgtest
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_ca_file = 'ca.crt'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 40
max_wal_senders = 0
wal_level = minimal
`)
	if cerr := conf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return tp.writeFile(filepath.Join(tp.dir, "pg_hba.conf"), []byte(`# pgtest: each role by its own method only
hostssl all cert_user  127.0.0.1/32 cert
host    all scram_user 127.0.0.1/32 scram-sha-256
host    all md5_user   127.0.0.1/32 md5
host    all clear_user 127.0.0.1/32 password
host    all postgres   127.0.0.1/32 trust
host    all all        0.0.0.0/0    reject
host    all all        ::/0         reject
`), 0o600)
}

func (tp *template) writeCerts() error {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "pgtest CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
	}
	caDER, caCert, err := issue(caTmpl, nil, caKey, caKey)
	if err != nil {
		return err
	}
	leaf := func(cn string, usage x509.ExtKeyUsage, dns []string, ips []net.IP) ([]byte, *x509.Certificate, *ecdsa.PrivateKey, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, nil, err
		}
		der, cert, err := issue(&x509.Certificate{
			Subject:     pkix.Name{CommonName: cn},
			DNSNames:    dns,
			IPAddresses: ips,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage},
			NotBefore:   now.Add(-time.Hour),
			NotAfter:    now.Add(7 * 24 * time.Hour),
		}, caCert, key, caKey)
		return der, cert, key, err
	}
	srvDER, _, srvKey, err := leaf("localhost", x509.ExtKeyUsageServerAuth, []string{"localhost"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	if err != nil {
		return err
	}
	cliDER, cliCert, cliKey, err := leaf(CertUser, x509.ExtKeyUsageClientAuth, nil, nil)
	if err != nil {
		return err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	srvKeyPEM, err := keyPEM(srvKey)
	if err != nil {
		return err
	}
	cliKeyPEM, err := keyPEM(cliKey)
	if err != nil {
		return err
	}
	// The server's files live in the data directory, so they are copied
	// with it.
	if err := tp.writeFile(filepath.Join(tp.dir, "ca.crt"), caPEM, 0o644); err != nil {
		return err
	}
	if err := tp.writeFile(filepath.Join(tp.dir, "server.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), 0o644); err != nil {
		return err
	}
	if err := tp.writeFile(filepath.Join(tp.dir, "server.key"), srvKeyPEM, 0o600); err != nil {
		return err
	}
	client := filepath.Join(tp.root, "client")
	if err := os.Mkdir(client, 0o755); err != nil {
		return err
	}
	tp.caFile = filepath.Join(client, "ca.crt")
	tp.clientCertFile = filepath.Join(client, "cert_user.crt")
	tp.clientKeyFile = filepath.Join(client, "cert_user.key")
	if err := os.WriteFile(tp.caFile, caPEM, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(tp.clientCertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cliDER}), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(tp.clientKeyFile, cliKeyPEM, 0o600); err != nil {
		return err
	}
	tp.ca = x509.NewCertPool()
	tp.ca.AddCert(caCert)
	tp.clientCert = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey, Leaf: cliCert}
	return nil
}

func issue(tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, signer *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("signing certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	return der, cert, err
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// setUp makes the roles, the database and its table in the template.
func (tp *template) setUp(c *Cluster) error {
	tp.passwords = map[string]string{}
	for _, role := range []string{ScramUser, MD5User, ClearUser} {
		b := make([]byte, 12)
		rand.Read(b)
		tp.passwords[role] = hex.EncodeToString(b)
	}
	if err := c.exec(Superuser, "postgres",
		"SET password_encryption = 'scram-sha-256'",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", ScramUser, tp.passwords[ScramUser]),
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", ClearUser, tp.passwords[ClearUser]),
		fmt.Sprintf("CREATE ROLE %s LOGIN", CertUser),
		"SET password_encryption = 'md5'",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", MD5User, tp.passwords[MD5User]),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", Database, Superuser),
	); err != nil {
		return err
	}
	stmts := []string{"CREATE TABLE items (id int PRIMARY KEY, name text)"}
	for _, id := range slices.Sorted(maps.Keys(Items)) {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO items VALUES (%d, '%s')", id, Items[id]))
	}
	stmts = append(stmts, fmt.Sprintf("GRANT SELECT ON items TO %s, %s, %s, %s", CertUser, ScramUser, MD5User, ClearUser))
	return c.exec(Superuser, Database, stmts...)
}

// exec runs statements as a trusted role, one by one.
func (c *Cluster) exec(role, database string, stmts ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := c.connect(ctx, role, database)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s).ReadAll(); err != nil {
			return fmt.Errorf("running %q: %w", s, err)
		}
	}
	return nil
}

func (c *Cluster) connect(ctx context.Context, role, database string) (*pgconn.PgConn, error) {
	return pgconn.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%s user=%s dbname=%s sslmode=disable "+
		"sslrootcert='' sslcert='' sslkey='' passfile='' connect_timeout=5", c.port(), role, database))
}

func (c *Cluster) port() string {
	_, p, _ := net.SplitHostPort(c.Addr)
	return p
}

// start runs a postmaster on c.Dir at a free port and waits until it
// takes logins.
func (tp *template) start(c *Cluster) error {
	var err error
	for range 3 { // another process may take the free port first
		if err = tp.startOnce(c); err == nil {
			return nil
		}
	}
	return err
}

func (tp *template) startOnce(c *Cluster) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("finding a free port: %w", err)
	}
	c.Addr = l.Addr().String()
	l.Close()

	c.log = c.Dir + ".log"
	logf, err := os.Create(c.log)
	if err != nil {
		return fmt.Errorf("creating log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(tp.bin, "postgres"), "-D", c.Dir, "-c", "port="+c.port())
	cmd.Stdout, cmd.Stderr = logf, logf
	// SIGQUIT (immediate shutdown) when the test binary dies. Pdeathsig
	// follows the thread that forked, so a thread that never exits forks.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tp.owner, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := spawn(cmd); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(c.exited) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := c.connect(ctx, Superuser, "postgres")
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("postgres exited at start: %s", tail(c.log))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-c.exited
			return fmt.Errorf("postgres did not take logins within 30s: %v: %s", err, tail(c.log))
		}
	}
}

func tail(path string) string {
	data, _ := os.ReadFile(path)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return strings.TrimSpace(string(data))
}

var (
	spawnOnce sync.Once
	spawns    chan spawnRequest
)

type spawnRequest struct {
	cmd *exec.Cmd
	err chan error
}

// spawn starts cmd from a goroutine locked to a thread that lives as long
// as the process, so that the child's Pdeathsig fires only when the process
// dies (it fires when the forking thread exits).
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawns = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread()
			for r := range spawns {
				r.err <- r.cmd.Start()
			}
		}()
	})
	errc := make(chan error, 1)
	spawns <- spawnRequest{cmd, errc}
	return <-errc
}

// copyDir copies a data directory, its modes, and hands it to owner.
func copyDir(src, dst string, owner *syscall.Credential) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := copyFile(path, target, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("copying %s: not a file or directory", path)
		}
		if owner != nil {
			return os.Lchown(target, int(owner.Uid), int(owner.Gid))
		}
		return nil
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
