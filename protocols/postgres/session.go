package postgres

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres/classify"
	"github.com/postern/postern/protocols/postgres/login"
)

// DefaultMaxMessage is the default limit on one message from a client.
const DefaultMaxMessage = 64 << 20

// maxServerMessage is the limit on one message from the server (its own
// limit on a field is 1 GB).
const maxServerMessage = 1 << 30

// maxInspected bounds the server messages whose bodies the session reads to
// follow the conversation; a larger message of a kind it watches (an
// ErrorResponse with a huge detail) is passed on unread.
const maxInspected = 1 << 20

// maxParamLen bounds each Bind parameter kept in the recording.
const maxParamLen = 4 << 10

// Upstream is the server side of one session: a stream to the agent that
// logged in as the session's role and now relays bytes to the server.
type Upstream struct {
	Conn   net.Conn
	Agent  string
	Cancel CancelFunc // sends a CancelRequest through the same agent
}

// Config configures one client session.
type Config struct {
	Session  string // audit session id
	Identity spiffeid.ID
	Groups   []string
	Service  string

	Authorizer protocols.Authorizer
	Recorder   protocols.Recorder
	Classifier *classify.Classifier
	Keys       *Keys
	// Open opens the server side for role user on database, with the
	// startup parameters the server is to get (already authorized).
	Open func(ctx context.Context, user, database string, params map[string]string) (*Upstream, error)

	// Decided, if set, is told of every query decided: verdict (allow,
	// deny) and class, for metrics.
	Decided func(verdict, class string)

	CaptureRows    int           // result rows kept per query in the recording
	MaxMessage     int           // limit on one client message, DefaultMaxMessage if 0
	StartupTimeout time.Duration // for the client's startup message, 10s if 0
	Logger         *slog.Logger
}

// Result says how a session went.
type Result struct {
	// Cancel is set when the connection carried a CancelRequest instead of
	// a session; CancelKnown when its key belonged to a live session.
	Cancel, CancelKnown bool
	// User and Database are what the client asked for.
	User, Database string
	// Refused is the decision that refused the session at startup.
	Refused *protocols.Decision
	// Opened is set once Open succeeded; Agent names the agent.
	Opened bool
	Agent  string
	// In and Out count bytes from the client and to the client.
	In, Out int64
	// Err is why the session failed, if it did (nil for a normal end).
	Err error
}

// Serve runs one client session on a connection whose TLS handshake is
// done: the startup, the decisions on database, role and every statement,
// and the relay to the server through Open's upstream. It returns when the
// session ends.
func Serve(ctx context.Context, client net.Conn, cfg Config) (res Result) {
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Classifier == nil {
		cfg.Classifier = classify.New(0)
	}
	if cfg.Keys == nil {
		cfg.Keys = NewKeys() // this session's cancels only
	}
	s := &session{cfg: cfg, client: client,
		cr: bufio.NewReaderSize(client, 32<<10), cw: bufio.NewWriterSize(client, 32<<10),
		prepared: map[string]*prepared{}, portals: map[string]*portal{}}
	s.req = protocols.Request{Identity: cfg.Identity, Groups: cfg.Groups, Service: cfg.Service, Protocol: protocols.Postgres}

	client.SetDeadline(time.Now().Add(cfg.StartupTimeout))
	st, err := ReadStartup(s.cr)
	if err != nil {
		s.fatal("08P01", "Postern: invalid startup packet: "+err.Error())
		res.Err = err
		return res
	}
	if st.Cancel != nil {
		res.Cancel = true
		res.CancelKnown, res.Err = cfg.Keys.Cancel(ctx, *st.Cancel)
		return res
	}
	res.User, res.Database = st.Params["user"], st.Params["database"]
	if res.Database == "" {
		res.Database = res.User
	}
	s.pg = protocols.PostgresRequest{Database: res.Database, User: res.User}

	params, unknownOpts, d := s.startupParams(ctx, st)
	if d != nil {
		s.fatal("28000", fmt.Sprintf("Postern: rule %q refuses this session: %s", d.Rule, d.Reason))
		res.Refused = d
		return res
	}
	up, err := cfg.Open(ctx, res.User, res.Database, params)
	if err != nil {
		s.fatal("08006", fmt.Sprintf("Postern cannot reach service %q: %v", cfg.Service, err))
		res.Err = err
		return res
	}
	res.Opened, res.Agent = true, up.Agent
	s.server = up.Conn
	defer s.server.Close()
	s.sr = bufio.NewReaderSize(up.Conn, 64<<10)
	s.sw = bufio.NewWriterSize(up.Conn, 32<<10)

	upSt, err := login.ReadStartup(s.sr)
	if err != nil {
		var le *login.LoginError
		if errors.As(err, &le) {
			s.send(le.Response)
			s.cw.Flush()
		} else {
			s.fatal("08006", "Postern: the agent could not log in: "+err.Error())
		}
		res.Err = err
		return res
	}
	fake, forget := cfg.Keys.add(CancelKey{PID: upSt.PID, Secret: upSt.SecretKey}, up.Cancel)
	defer forget()
	if st.Minor != 0 || len(unknownOpts) > 0 {
		s.send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknownOpts})
	}
	s.send(&pgproto3.AuthenticationOk{})
	names := make([]string, 0, len(upSt.Params))
	for k := range upSt.Params {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s.watchParameter(k, upSt.Params[k])
		s.send(&pgproto3.ParameterStatus{Name: k, Value: upSt.Params[k]})
	}
	s.send(&pgproto3.BackendKeyData{ProcessID: fake.PID, SecretKey: fake.Secret})
	s.send(&pgproto3.ReadyForQuery{TxStatus: upSt.TxStatus})
	if err := s.cw.Flush(); err != nil {
		res.Err = fmt.Errorf("writing startup to client: %w", err)
		return res
	}
	client.SetDeadline(time.Time{})

	var rnd [8]byte
	rand.Read(rnd[:])
	s.poisonPrefix = "postern_refused_" + hex.EncodeToString(rnd[:]) + "_"

	res.Err = s.run(ctx)
	res.In, res.Out = s.in.Load(), s.out.Load()
	return res
}

// Refuse reads a client's startup message (waiting at most timeout) and
// answers it with FATAL 28000 and msg: a session refused before its
// database and role mattered.
func Refuse(client net.Conn, timeout time.Duration, msg string) {
	client.SetDeadline(time.Now().Add(timeout))
	cr := bufio.NewReader(client)
	if st, err := ReadStartup(cr); err != nil || st.Cancel != nil {
		return
	}
	b, _ := (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "28000", Message: msg}).Encode(nil)
	client.Write(b)
}

// session is the state of one client session after startup.
type session struct {
	cfg    Config
	req    protocols.Request
	pg     protocols.PostgresRequest
	client net.Conn
	cr     *bufio.Reader
	cw     *bufio.Writer // written by the server loop only, once running
	server net.Conn
	sr     *bufio.Reader
	sw     *bufio.Writer // written by the client loop only

	in, out atomic.Int64
	// unsafe is set while the server reads string literals differently
	// from the classifier (standard_conforming_strings off, or a client
	// encoding that hides ASCII bytes in multibyte characters): every
	// statement is then taken for admin.
	unsafe atomic.Pointer[string]

	// Client loop only.
	prepared     map[string]*prepared // named and unnamed ("") statements, SQL PREPARE and Parse alike
	portals      map[string]*portal
	discarding   bool // after a refused extended-protocol message, until Sync
	lastParse    string
	poisonPrefix string
	poisonSeq    uint64
	buf          []byte

	// Shared by both loops.
	mu       sync.Mutex
	queue    []*item
	finished []*protocols.PostgresQueryEvent // completed, to be recorded outside mu
}

// prepared is what the session knows of a prepared statement.
type prepared struct {
	sql  string
	st   classify.Statement
	cols []string // from the server's RowDescription, when captured; guarded by session.mu
}

type portal struct {
	stmt    *prepared // nil when the statement is unknown
	name    string
	params  []*string
	formats []int16 // result format codes of the Bind
}

type itemKind uint8

const (
	itemQuery    itemKind = iota // a simple Query (or FunctionCall): ends at ReadyForQuery
	itemExecute                  // an Execute: ends at CommandComplete, EmptyQuery, PortalSuspended or an error
	itemSync                     // a Sync: ends at ReadyForQuery
	itemPoison                   // a refusal standing in the server's stream
	itemDescribe                 // a Describe, followed only while capturing rows: ends at RowDescription or NoData
)

// item is one thing the server will answer, in the order the client sent it.
type item struct {
	kind   itemKind
	start  time.Time
	ev     *protocols.PostgresQueryEvent
	poison string                  // itemPoison: the statement name whose error stands for the refusal
	deny   *pgproto3.ErrorResponse // itemPoison: what the client is to see instead
	parse  string                  // itemSync: the last Parse of the segment, for errors no Execute explains
	cols   []bool                  // capture: which columns are binary
	stmt   *prepared               // itemExecute, itemDescribe: the statement, for its columns
	format []int16                 // itemExecute: the Bind's result format codes
}

func (s *session) send(m pgproto3.BackendMessage) {
	b, err := m.Encode(nil)
	if err == nil {
		s.cw.Write(b)
	}
}

// fatal sends a FATAL error to the client before the session runs.
func (s *session) fatal(code, msg string) {
	s.send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
	s.cw.Flush()
}

// startupParams decides the session's database and role and every startup
// parameter, and returns the parameters for the server, the protocol
// options to decline, or the decision that refuses the session.
func (s *session) startupParams(ctx context.Context, st *Startup) (map[string]string, []string, *protocols.Decision) {
	pg := s.pg
	pg.Startup = true
	req := s.req
	req.Postgres = &pg
	d := s.cfg.Authorizer.Authorize(ctx, req)
	if !d.Allow {
		return nil, nil, &d
	}
	params := map[string]string{}
	var unknown []string
	check := func(what string, stmt classify.Statement) *protocols.Decision {
		s.pg.Setting = true
		dd := s.authorize(ctx, &stmt)
		s.pg.Setting = false
		if dd.Allow {
			return nil
		}
		dd.Reason = what + " is not allowed: " + dd.Reason
		if stmt.Reason != "" {
			dd.Reason += " (" + stmt.Reason + ")"
		}
		return &dd
	}
	names := make([]string, 0, len(st.Params))
	for k := range st.Params {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := st.Params[k]
		switch {
		case k == "user" || k == "database":
		case strings.HasPrefix(k, "_pq_."):
			unknown = append(unknown, k)
		case k == "replication":
			if !isOff(v) {
				if dd := check("a replication connection", classify.Statement{Class: classify.Admin, Base: classify.Admin, Tag: "REPLICATION"}); dd != nil {
					return nil, nil, dd
				}
			}
			params[k] = v
		case k == "options":
			settings, ok := parseOptions(v)
			if !ok {
				if dd := check("the startup option "+quote(v), classify.Statement{Class: classify.Admin, Base: classify.Admin, Tag: "OPTIONS", Reason: "only -c name=value and --name=value options are understood"}); dd != nil {
					return nil, nil, dd
				}
			}
			for _, kv := range settings {
				if dd := check("setting "+kv[0]+" in the startup options", classify.Setting(kv[0], kv[1])); dd != nil {
					return nil, nil, dd
				}
			}
			params[k] = v
		default:
			if dd := check("the startup parameter "+k+"="+quote(v), classify.Setting(k, v)); dd != nil {
				return nil, nil, dd
			}
			params[k] = v
		}
	}
	if d.ReadOnly {
		params["default_transaction_read_only"] = "on"
	}
	return params, unknown, nil
}

func isOff(v string) bool {
	switch strings.ToLower(v) {
	case "", "false", "off", "no", "0":
		return true
	}
	return false
}

func quote(v string) string { return fmt.Sprintf("%q", v) }

// parseOptions splits a startup options string the way the server does
// (spaces separate, a backslash escapes the next byte) and returns its
// settings. ok is false when it holds anything but -c name=value and
// --name=value.
func parseOptions(v string) (settings [][2]string, ok bool) {
	var words []string
	var cur strings.Builder
	have, esc := false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case esc:
			cur.WriteByte(c)
			esc, have = false, true
		case c == '\\':
			esc = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		words = append(words, cur.String())
	}
	for i := 0; i < len(words); i++ {
		w := words[i]
		var kv string
		switch {
		case w == "-c" && i+1 < len(words):
			i++
			kv = words[i]
		case strings.HasPrefix(w, "-c") && len(w) > 2:
			kv = w[2:]
		case strings.HasPrefix(w, "--") && len(w) > 2:
			kv = w[2:]
		default:
			return nil, false
		}
		name, val, found := strings.Cut(kv, "=")
		if !found || name == "" {
			return nil, false
		}
		settings = append(settings, [2]string{strings.ReplaceAll(name, "-", "_"), val})
	}
	return settings, true
}

// authorize asks the policy about one statement of this session.
// While the server reads text differently from the parser, *st becomes an
// admin statement saying why, so that refusals explain themselves.
func (s *session) authorize(ctx context.Context, st *classify.Statement) protocols.Decision {
	*st = s.effective(*st)
	pg := s.pg
	pg.Class, pg.Tag, pg.TagExact, pg.TxControl = string(st.Class), st.Tag, st.Class == st.Base, st.TxControl
	req := s.req
	req.Postgres = &pg
	return s.cfg.Authorizer.Authorize(ctx, req)
}

// effective is st as the session must judge it: admin, saying why, while
// the server reads text differently from the parser.
func (s *session) effective(st classify.Statement) classify.Statement {
	if why := s.unsafe.Load(); why != nil && !st.TxControl {
		return classify.Statement{Class: classify.Admin, Base: classify.Admin, Tag: st.Tag, Reason: *why}
	}
	return st
}

// watchParameter follows the server's reports of the settings that decide
// how it reads statement text.
func (s *session) watchParameter(name, value string) {
	switch strings.ToLower(name) {
	case "standard_conforming_strings", "client_encoding":
	default:
		return
	}
	st := classify.Setting(name, value)
	if st.Class == classify.Read {
		s.unsafe.Store(nil)
		return
	}
	why := "the server reports " + name + " = " + value + ", under which it reads statements differently from Postern's parser"
	s.unsafe.Store(&why)
}

// run relays the session until either side ends it.
func (s *session) run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		s.client.Close()
		s.server.Close()
	})
	defer stop()
	serverDone := make(chan error, 1)
	go func() {
		defer func() {
			// A bug here must end this session, not the gateway.
			if v := recover(); v != nil {
				s.cfg.Logger.Error("postgres server loop panicked", "session", s.cfg.Session, "panic", fmt.Sprint(v))
				s.client.Close()
				s.server.Close()
				serverDone <- fmt.Errorf("relaying from the server: internal error: %v", v)
			}
		}()
		err := s.fromServer()
		s.cw.Flush()
		// The server side is gone: stop reading the client too.
		s.client.SetReadDeadline(time.Now())
		serverDone <- err
	}()
	cerr := s.fromClient(ctx)
	if cerr != nil && !errors.Is(cerr, errClientGone) {
		// A protocol violation: stop the server side, then tell the client.
		s.server.Close()
		serr := <-serverDone
		s.fatalRunning(cerr)
		return errors.Join(cerr, ignoreClosed(serr))
	}
	s.sw.Flush()
	closeWrite(s.server)
	var serr error
	select {
	case serr = <-serverDone:
	case <-time.After(5 * time.Second):
		s.server.Close()
		serr = <-serverDone
	}
	if ctx.Err() != nil {
		return nil
	}
	return ignoreClosed(serr)
}

var errClientGone = errors.New("client ended the session")

func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
		return nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// fatalRunning tells the client why the gateway ends its session, after the
// server loop has stopped writing.
func (s *session) fatalRunning(err error) {
	code := "08P01"
	if errors.Is(err, ErrMessageTooLarge) {
		code = "54000"
	}
	s.cw.Reset(s.client)
	s.fatal(code, "Postern: "+err.Error())
}
