package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"gocloud.dev/blob"
	"google.golang.org/grpc/codes"

	"github.com/postern/postern/gateway"
	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/gateway/audit/replay"
	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

const (
	auditFlagsUsage  = "[--data-dir DIR] [--recordings DIR|URL] [--key FILE]"
	auditListUsage   = "audit list [--identity GLOB] [--service GLOB] [--since T] [--until T] [--outcome O] [--protocol P] [--limit N] [--format text|json] " + auditFlagsUsage
	auditShowUsage   = "audit show ID [--format text|json] " + auditFlagsUsage
	auditVerifyUsage = "audit verify [ID] [--format text|json] " + auditFlagsUsage
	auditUIUsage     = "audit ui --listen 127.0.0.1:PORT " + auditFlagsUsage
)

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const short = "usage: postern audit list|show|verify|ui [flags] (see postern audit --help)"
	if len(args) == 0 {
		return usagef("%s", short)
	}
	switch args[0] {
	case "list":
		return runAuditList(ctx, args[1:], stdout, stderr)
	case "show":
		return runAuditShow(ctx, args[1:], stdout, stderr)
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	case "ui":
		return runAuditUI(ctx, args[1:], stdout, stderr)
	case "-h", "--help":
		fmt.Fprintf(stderr, "Usage: postern %s\n       postern %s\n       postern %s\n       postern %s\n",
			auditListUsage, auditShowUsage, auditVerifyUsage, auditUIUsage)
		return errHelp
	}
	return usagef("unknown audit command %q; %s", args[0], short)
}

// auditFlags are the flags that say where the recordings, their index and
// the audit key are; every audit command and replay takes them.
type auditFlags struct {
	dataDir    string
	recordings string
	key        string
}

func addAuditFlags(fs *flag.FlagSet, withKey bool) *auditFlags {
	f := &auditFlags{}
	fs.StringVar(&f.dataDir, "data-dir", "./postern-data", "the gateway's data directory (its index of sessions, recordings and audit key)")
	fs.StringVar(&f.recordings, "recordings", "", "recordings directory (default DATA/recordings), or a blob store URL (file:///DIR, s3://BUCKET?region=R); without an existing data dir, sessions are read from the recordings")
	if withKey {
		fs.StringVar(&f.key, "key", "", "PEM file of the public audit key(s) that verify seals (default DATA/"+audit.PublicKeyFile+")")
	}
	return f
}

// open opens the archive the flags name: the data dir's index and
// recordings, or, when --recordings is given and there is no data dir,
// the recordings alone. A --recordings URL names a blob store, whose
// recordings are fetched into a temporary directory and read without an
// index (the store holds sealed recordings only). The returned func
// releases the index and the temporary directory.
func (f *auditFlags) open(ctx context.Context) (*audit.Archive, func(), error) {
	if strings.Contains(f.recordings, "://") {
		return f.openBucket(ctx)
	}
	a := &audit.Archive{Dir: f.recordings}
	if f.recordings != "" {
		if _, err := os.Stat(f.dataDir); errors.Is(err, fs.ErrNotExist) {
			return a, func() {}, nil // a copy of the recordings: no index
		}
	}
	idx, err := gateway.OpenIndex(ctx, f.dataDir)
	if err != nil {
		return nil, nil, errorf("opening data dir", err)
	}
	a.Index = idx
	if a.Dir == "" {
		a.Dir = gateway.RecordingsDir(f.dataDir)
	}
	return a, func() { idx.Close() }, nil
}

// openBucket fetches the recordings of the blob store at f.recordings.
func (f *auditFlags) openBucket(ctx context.Context) (*audit.Archive, func(), error) {
	b, err := blob.OpenBucket(ctx, f.recordings)
	if err != nil {
		return nil, nil, errorf("opening recordings store", err)
	}
	defer b.Close()
	dir, err := os.MkdirTemp("", "postern-recordings-")
	if err != nil {
		return nil, nil, errorf("fetching recordings", err)
	}
	done := func() { os.RemoveAll(dir) }
	if _, err := audit.Download(ctx, b, dir); err != nil {
		done()
		return nil, nil, errorf("fetching recordings from "+f.recordings, err)
	}
	return &audit.Archive{Dir: dir}, done, nil
}

// keys loads the public audit keys.
func (f *auditFlags) keys() (audit.Keys, error) {
	path := f.key
	if path == "" {
		path = filepath.Join(f.dataDir, audit.PublicKeyFile)
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no audit public key at %s: give --key FILE, a copy of the gateway's DATA/%s", path, audit.PublicKeyFile)
	}
	return audit.LoadKeys(path)
}

// sessionArg parses args, flags anywhere, and returns the one session id
// among them.
func sessionArg(fs *flag.FlagSet, args []string, usage string) (string, error) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", usagef("usage: postern %s", usage)
	}
	if !audit.ValidSessionID(pos[0]) {
		return "", usagef("invalid session id %q", pos[0])
	}
	return pos[0], nil
}

// checkFormat refuses a --format other than text and json.
func checkFormat(format string) error {
	if format != "text" && format != "json" {
		return usagef("--format %q: want text or json", format)
	}
	return nil
}

// outcomeOpen lists sessions still being recorded; it is not an outcome in
// the index, where their outcome is empty.
const outcomeOpen = "open"

func runAuditList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit list", auditListUsage, stderr)
	identity := fs.String("identity", "", "only sessions of this identity (* matches any run of characters)")
	service := fs.String("service", "", "only sessions to this service (* matches any run of characters)")
	since := fs.String("since", "", "only sessions that started at or after T: RFC 3339, a date, or a duration ago (1h)")
	until := fs.String("until", "", "only sessions that started before T: RFC 3339, a date, or a duration ago")
	outcome := fs.String("outcome", "", "only sessions with this outcome: ok, denied, error, truncated, or open (still recording)")
	proto := fs.String("protocol", "", "only sessions of this protocol: tcp, postgres, http, grpc")
	limit := fs.Int("limit", 0, "at most N sessions, the newest (0: all)")
	format := fs.String("format", "text", "output format: text (columns) or json (one object a line)")
	af := addAuditFlags(fs, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("audit list takes no arguments, got %q", fs.Args())
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	now := time.Now()
	f := store.SessionFilter{Identity: *identity, Service: *service, Outcome: *outcome, Protocol: *proto, Limit: *limit}
	var err error
	if f.Since, err = parseSince(*since, now); err != nil {
		return usagef("--since: %v", err)
	}
	if f.Until, err = parseSince(*until, now); err != nil {
		return usagef("--until: %v", err)
	}
	if *limit < 0 {
		return usagef("--limit %d: want 0 (all) or more", *limit)
	}
	switch *outcome {
	case "", protocols.OutcomeOK, protocols.OutcomeDenied, protocols.OutcomeError, protocols.OutcomeTruncated:
	case outcomeOpen: // not an outcome in the index, where an open session has none
		f.Outcome, f.Status = "", audit.StatusOpen
	default:
		return usagef("--outcome %q: want ok, denied, error, truncated or open", *outcome)
	}
	if *proto != "" && !protocols.ValidProtocol(*proto) {
		return usagef("--protocol %q: want tcp, postgres, http or grpc", *proto)
	}

	a, done, err := af.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	ss, err := a.Sessions(ctx, f)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(stdout, 64<<10)
	if *format == "json" {
		err = writeSessionsJSON(w, ss)
	} else {
		err = writeSessionsText(w, ss)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return errorf("writing sessions", err)
	}
	return nil
}

// parseSince reads a point in time: RFC 3339, a date (UTC midnight), or a
// duration meaning that long before now. Empty is the zero time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 (2026-03-04T05:06:07Z), a date (2026-03-04) nor a duration ago (90m, 24h)", s)
	}
	if d < 0 {
		return time.Time{}, fmt.Errorf("%q: a duration ago must not be negative", s)
	}
	return now.Add(-d), nil
}

// sessionJSON is one session in `audit list --format json`.
type sessionJSON struct {
	ID         string    `json:"id"`
	Identity   string    `json:"identity,omitempty"`
	Identities []string  `json:"identities,omitempty"`
	Source     string    `json:"source,omitempty"`
	Service    string    `json:"service,omitempty"`
	Protocol   string    `json:"protocol,omitempty"`
	Agent      string    `json:"agent,omitempty"`
	Transport  string    `json:"transport,omitempty"`
	Database   string    `json:"database,omitempty"`
	DBUser     string    `json:"db_user,omitempty"`
	Start      time.Time `json:"start,omitzero"`
	End        time.Time `json:"end,omitzero"`
	DurationMS *int64    `json:"duration_ms,omitempty"`
	BytesIn    int64     `json:"bytes_in,omitempty"`
	BytesOut   int64     `json:"bytes_out,omitempty"`
	Outcome    string    `json:"outcome,omitempty"`
	Status     string    `json:"status,omitempty"`
	Events     int64     `json:"events,omitempty"`
	Denies     int64     `json:"denies,omitempty"`
}

func writeSessionsJSON(w io.Writer, ss []store.Session) error {
	enc := json.NewEncoder(w)
	for _, s := range ss {
		j := sessionJSON{ID: s.ID, Identity: s.Identity, Identities: s.Identities, Source: s.Source, Service: s.Service, Protocol: s.Protocol,
			Agent: s.Agent, Transport: s.Transport, Database: s.Database, DBUser: s.DBUser, Start: s.Start, End: s.End,
			BytesIn: s.BytesIn, BytesOut: s.BytesOut, Outcome: s.Outcome, Status: s.Status, Events: s.Events, Denies: s.Denies}
		if !s.End.IsZero() && !s.Start.IsZero() {
			ms := s.End.Sub(s.Start).Milliseconds()
			j.DurationMS = &ms
		}
		if err := enc.Encode(&j); err != nil {
			return err
		}
	}
	return nil
}

func writeSessionsText(w io.Writer, ss []store.Session) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTART\tDURATION\tIDENTITY\tSERVICE\tPROTOCOL\tOUTCOME\tIN\tOUT\tEVENTS\tDENIES")
	var b []byte
	for _, s := range ss {
		b = append(b[:0], s.ID...)
		b = append(b, '\t')
		b = append(b, timeOrDash(s.Start, time.RFC3339)...)
		b = append(b, '\t')
		b = append(b, sessionDuration(s)...)
		b = append(b, '\t')
		b = append(b, dash(replay.Clean(s.Identity))...)
		if len(s.Identities) > 0 { // others made requests too: `audit show` names them
			b = append(b, " (+"...)
			b = strconv.AppendInt(b, int64(len(s.Identities)), 10)
			b = append(b, ')')
		}
		b = append(b, '\t')
		b = append(b, dash(replay.Clean(s.Service))...)
		b = append(b, '\t')
		b = append(b, dash(replay.Clean(s.Protocol))...)
		b = append(b, '\t')
		b = append(b, sessionOutcome(s)...)
		b = append(b, '\t')
		b = strconv.AppendInt(b, s.BytesIn, 10)
		b = append(b, '\t')
		b = strconv.AppendInt(b, s.BytesOut, 10)
		b = append(b, '\t')
		b = strconv.AppendInt(b, s.Events, 10)
		b = append(b, '\t')
		b = strconv.AppendInt(b, s.Denies, 10)
		b = append(b, '\n')
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// sessionOutcome is a session's outcome, or "open" while it is recorded.
func sessionOutcome(s store.Session) string {
	if s.Status == audit.StatusOpen || s.Outcome == "" {
		return outcomeOpen
	}
	return s.Outcome
}

func sessionDuration(s store.Session) string {
	if s.End.IsZero() || s.Start.IsZero() {
		return "-"
	}
	return formatDuration(s.End.Sub(s.Start))
}

// formatDuration rounds d for people: to the millisecond under a minute,
// to the second above.
func formatDuration(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func timeOrDash(t time.Time, layout string) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(layout)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sessionDetail is what `audit show` reports: the session's header, from
// its recording (and the index), and a summary of its events.
type sessionDetail struct {
	ID         string         `json:"id"`
	Identity   string         `json:"identity,omitempty"`
	Identities []string       `json:"identities,omitempty"` // the others that made requests or calls
	Groups     []string       `json:"groups,omitempty"`
	Source     string         `json:"source,omitempty"`
	Service    string         `json:"service,omitempty"`
	Protocol   string         `json:"protocol,omitempty"`
	Agent      string         `json:"agent,omitempty"`
	Transport  string         `json:"transport,omitempty"`
	Database   string         `json:"database,omitempty"`
	DBUser     string         `json:"db_user,omitempty"`
	Start      time.Time      `json:"start,omitzero"`
	End        time.Time      `json:"end,omitzero"`
	DurationMS *int64         `json:"duration_ms,omitempty"`
	BytesIn    int64          `json:"bytes_in"`
	BytesOut   int64          `json:"bytes_out"`
	Outcome    string         `json:"outcome"`
	Error      string         `json:"error,omitempty"`
	Status     string         `json:"status,omitempty"`
	Records    int            `json:"records"`
	Verified   verifyJSON     `json:"verified"`
	Events     map[string]int `json:"events"`
	Denies     []denyJSON     `json:"denies,omitempty"`
	Postgres   *pgSummary     `json:"postgres,omitempty"`
	HTTP       map[int]int    `json:"http,omitempty"` // requests by status
	GRPC       map[int]int    `json:"grpc,omitempty"` // calls by status code

	first time.Time
	start bool // a session.start was read
	end   bool // a session.end was read
}

type denyJSON struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Rule   string    `json:"rule"`
	Reason string    `json:"reason,omitempty"`
}

type pgSummary struct {
	Queries int64 `json:"queries"`
	Refused int64 `json:"refused"`
	Failed  int64 `json:"failed"` // allowed, ended by an error
	Rows    int64 `json:"rows"`
}

// add takes one record into the summary.
func (d *sessionDetail) add(r audit.Record) {
	if d.Records == 0 {
		d.first = r.Time
	}
	d.Records++
	d.Events[string(r.Type)]++
	switch r.Type {
	case protocols.SessionStarted:
		var s protocols.SessionStart
		if json.Unmarshal(r.Data, &s) == nil {
			d.start = true
			d.Identity, d.Groups, d.Source, d.Service = s.Identity, s.Groups, s.Source, s.Service
			d.Protocol, d.Agent, d.Transport, d.Database, d.DBUser = s.Protocol, s.Agent, s.Transport, s.Database, s.User
			d.Start = r.Time
		}
	case protocols.SessionEnded:
		var e protocols.SessionEnd
		if json.Unmarshal(r.Data, &e) == nil {
			d.end = true
			d.End, d.BytesIn, d.BytesOut, d.Outcome, d.Error = r.Time, e.BytesIn, e.BytesOut, e.Outcome, e.Error
			d.DurationMS = &e.Duration
		}
	case protocols.AuthzDenied:
		var a protocols.AuthzDeny
		if json.Unmarshal(r.Data, &a) == nil {
			d.Denies = append(d.Denies, denyJSON{Seq: r.Seq, Time: r.Time, Rule: a.Rule, Reason: a.Reason})
		}
	case protocols.PostgresQuery:
		var q protocols.PostgresQueryEvent
		if json.Unmarshal(r.Data, &q) == nil {
			if d.Postgres == nil {
				d.Postgres = &pgSummary{}
			}
			d.Postgres.Queries++
			d.Postgres.Rows += q.Rows
			switch {
			case q.Verdict == protocols.VerdictDeny:
				d.Postgres.Refused++
			case q.Error != "" || q.Code != "":
				d.Postgres.Failed++
			}
		}
	case protocols.HTTPRequested:
		var h protocols.HTTPRequestEvent
		if json.Unmarshal(r.Data, &h) == nil {
			if d.HTTP == nil {
				d.HTTP = map[int]int{}
			}
			d.HTTP[h.Status]++
			d.Identity, d.Identities = store.AddIdentity(d.Identity, d.Identities, h.Identity)
		}
	case protocols.GRPCCalled:
		var g protocols.GRPCCallEvent
		if json.Unmarshal(r.Data, &g) == nil {
			if d.GRPC == nil {
				d.GRPC = map[int]int{}
			}
			d.GRPC[g.Status]++
			d.Identity, d.Identities = store.AddIdentity(d.Identity, d.Identities, g.Identity)
		}
	}
}

// fill takes from the index row what the recording did not say.
func (d *sessionDetail) fill(row store.Session) {
	d.Status = row.Status
	if !d.start {
		d.Identity, d.Source, d.Service, d.Protocol = row.Identity, row.Source, row.Service, row.Protocol
		d.Agent, d.Transport, d.Database, d.DBUser = row.Agent, row.Transport, row.Database, row.DBUser
		d.Start = row.Start
	}
	if !d.end && row.Outcome != "" {
		d.End, d.BytesIn, d.BytesOut, d.Outcome = row.End, row.BytesIn, row.BytesOut, row.Outcome
	}
	if d.Outcome == "" {
		d.Outcome = outcomeOpen
	}
}

func runAuditShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit show", auditShowUsage, stderr)
	format := fs.String("format", "text", "output format: text or json")
	af := addAuditFlags(fs, true)
	id, err := sessionArg(fs, args, auditShowUsage)
	if err != nil {
		return err
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	a, done, err := af.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	row, file, err := a.Session(ctx, id)
	if err != nil && file.Path == "" {
		return err
	}
	// Summarize only records the chain has confirmed: a record counts once
	// the next one carries its hash, or the recording ended there.
	d := &sessionDetail{ID: id, Events: map[string]int{}}
	var held *audit.Record
	each := func(r audit.Record) error {
		if held != nil {
			d.add(*held)
		}
		held = &r
		return nil
	}
	// One pass: verified with the key when there is one, the chain alone
	// otherwise.
	var readErr, verr error
	keys, kerr := af.keys()
	if kerr == nil {
		a.Keys = keys
		var res audit.Result
		res, readErr = a.VerifyEach(ctx, id, each)
		d.Verified = verdictOf(id, res, readErr)
	} else {
		readErr = audit.Read(file.Path, each)
		d.Verified = verifyJSON{ID: id, Result: "unchecked", Error: kerr.Error()}
	}
	var ce *audit.ChainError
	if held != nil && (readErr == nil || errors.As(readErr, &ce) && held.Seq < int64(ce.Seq)) {
		d.add(*held)
	}
	d.fill(row)
	switch {
	case kerr == nil && d.Verified.Result == resultFail:
		verr = readErr
	case kerr != nil && readErr != nil:
		verr = readErr
		d.Verified = verdictOf(id, audit.Result{Records: d.Records}, readErr)
	}
	w := bufio.NewWriter(stdout)
	if *format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		err = enc.Encode(d)
	} else {
		err = writeDetailText(w, d)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return errorf("writing session", err)
	}
	if verr != nil {
		return fmt.Errorf("audit show: recording of %s failed verification: %s", id, d.Verified.reason())
	}
	return nil
}

func writeDetailText(w io.Writer, d *sessionDetail) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, replay.Clean(strings.ReplaceAll(v, "\t", " ")))
		}
	}
	const stamp = "2006-01-02T15:04:05.000Z07:00"
	field("id", d.ID)
	field("identity", dash(d.Identity))
	field("also", strings.Join(d.Identities, ", "))
	field("groups", strings.Join(d.Groups, ", "))
	field("source", d.Source)
	field("service", d.Service)
	field("protocol", d.Protocol)
	field("agent", d.Agent)
	field("transport", d.Transport)
	if d.Database != "" || d.DBUser != "" {
		v := dash(d.Database)
		if d.DBUser != "" {
			v += " as " + d.DBUser
		}
		field("database", v)
	}
	field("start", timeOrDash(d.Start, stamp))
	field("end", timeOrDash(d.End, stamp))
	switch {
	case d.DurationMS != nil:
		field("duration", formatDuration(time.Duration(*d.DurationMS)*time.Millisecond))
	case !d.End.IsZero() && !d.Start.IsZero():
		field("duration", formatDuration(d.End.Sub(d.Start)))
	}
	field("bytes", fmt.Sprintf("%d in, %d out", d.BytesIn, d.BytesOut))
	field("outcome", d.Outcome)
	field("error", d.Error)
	field("status", d.Status)
	field("records", strconv.Itoa(d.Records))
	field("verified", d.Verified.text())
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nevents")
	types := make([]string, 0, len(d.Events))
	for t := range d.Events {
		types = append(types, t)
	}
	slices.Sort(types)
	for _, t := range types {
		fmt.Fprintf(tw, "  %s\t%d\n", replay.Clean(t), d.Events[t])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.Denies) > 0 {
		fmt.Fprintln(w, "\ndenied")
		for _, x := range d.Denies {
			line := fmt.Sprintf("  [+%.3fs] record %d: rule %q", x.Time.Sub(d.first).Seconds(), x.Seq, x.Rule)
			if x.Reason != "" {
				line += ": " + replay.Clean(x.Reason)
			}
			fmt.Fprintln(w, line)
		}
	}
	if p := d.Postgres; p != nil {
		fmt.Fprintf(w, "\npostgres\n  %d queries, %d refused, %d failed, %d rows\n", p.Queries, p.Refused, p.Failed, p.Rows)
	}
	if len(d.HTTP) > 0 {
		fmt.Fprintln(w, "\nhttp requests by status")
		for _, s := range sortedKeys(d.HTTP) {
			fmt.Fprintf(tw, "  %d\t%d\n", s, d.HTTP[s])
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(d.GRPC) > 0 {
		fmt.Fprintln(w, "\ngrpc calls by status")
		for _, s := range sortedKeys(d.GRPC) {
			fmt.Fprintf(tw, "  %s (%d)\t%d\n", codes.Code(s), s, d.GRPC[s])
		}
		return tw.Flush()
	}
	return nil
}

func sortedKeys(m map[int]int) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Results of verifying one recording.
const (
	resultOK   = "ok"
	resultOpen = "open"
	resultFail = "fail"
)

// verifyJSON is one recording in `audit verify --format json`.
type verifyJSON struct {
	ID      string `json:"id"`
	Result  string `json:"result"` // ok, open, fail (unchecked in audit show without a key)
	Records int    `json:"records"`
	Version int    `json:"version,omitempty"`
	Sealed  bool   `json:"sealed"`
	Key     string `json:"key,omitempty"`
	Record  *int   `json:"record,omitempty"` // the record that failed
	Error   string `json:"error,omitempty"`
}

func verdictOf(id string, res audit.Result, err error) verifyJSON {
	v := verifyJSON{ID: id, Records: res.Records, Sealed: res.Sealed, Key: res.KeyID, Version: 2}
	if res.Kind == audit.V1 {
		v.Version = 1
	}
	var ce *audit.ChainError
	switch {
	case err == nil && res.Open:
		v.Result = resultOpen
	case err == nil:
		v.Result = resultOK
	case errors.As(err, &ce):
		v.Result, v.Record, v.Error = resultFail, &ce.Seq, ce.Reason
	default:
		v.Result, v.Error = resultFail, err.Error()
	}
	return v
}

// reason is why v failed, as in the text line.
func (v verifyJSON) reason() string {
	if v.Record != nil {
		return fmt.Sprintf("record %d: %s", *v.Record, v.Error)
	}
	return v.Error
}

// text is v as it follows the session id in a line of `audit verify`.
func (v verifyJSON) text() string {
	switch v.Result {
	case resultOK:
		if !v.Sealed {
			return fmt.Sprintf("ok (%d records, version %d: not sealed)", v.Records, v.Version)
		}
		return fmt.Sprintf("ok (%d records, sealed by key %s)", v.Records, v.Key)
	case resultOpen:
		return fmt.Sprintf("open (%d records so far)", v.Records)
	case resultFail:
		return "FAIL: " + v.reason()
	}
	return v.Result + ": " + v.Error
}

// line is v as one line of `audit verify`.
func (v verifyJSON) line() string {
	switch v.Result {
	case resultOK:
		if !v.Sealed {
			return fmt.Sprintf("ok %s (%d records, version %d: not sealed)", v.ID, v.Records, v.Version)
		}
		return fmt.Sprintf("ok %s (%d records, sealed by key %s)", v.ID, v.Records, v.Key)
	case resultOpen:
		return fmt.Sprintf("open %s (%d records so far)", v.ID, v.Records)
	}
	return fmt.Sprintf("FAIL %s: %s", v.ID, v.reason())
}

func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify", auditVerifyUsage, stderr)
	format := fs.String("format", "text", "output format: text or json (one object a line)")
	af := addAuditFlags(fs, true)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("usage: postern %s", auditVerifyUsage)
	}
	if len(pos) == 1 && !audit.ValidSessionID(pos[0]) {
		return usagef("invalid session id %q", pos[0])
	}
	if err := checkFormat(*format); err != nil {
		return err
	}
	keys, err := af.keys()
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	a, done, err := af.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	a.Keys = keys
	ids := pos
	if len(ids) == 0 {
		if ids, err = recordedSessions(ctx, a); err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
		if len(ids) == 0 {
			fmt.Fprintf(stderr, "no recordings in %s\n", a.Dir)
			return nil
		}
	}

	// Verify in parallel, print in order as results come.
	results := make([]chan verifyJSON, len(ids))
	for i := range results {
		results[i] = make(chan verifyJSON, 1)
	}
	jobs := make(chan int)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(runtime.GOMAXPROCS(0), len(ids)) {
		go func() {
			for i := range jobs {
				results[i] <- verifyOne(ctx, a, ids[i])
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := range ids {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	w := bufio.NewWriter(stdout)
	enc := json.NewEncoder(w)
	failed := 0
	for i := range ids {
		var v verifyJSON
		select {
		case v = <-results[i]:
		case <-ctx.Done():
			w.Flush()
			return fmt.Errorf("audit verify: %w", ctx.Err())
		}
		if v.Result == resultFail {
			failed++
		}
		if *format == "json" {
			err = enc.Encode(v)
		} else {
			_, err = fmt.Fprintln(w, v.line())
		}
		if err == nil && w.Buffered() > 16<<10 {
			err = w.Flush()
		}
		if err != nil {
			return errorf("writing results", err)
		}
	}
	if err := w.Flush(); err != nil {
		return errorf("writing results", err)
	}
	if failed > 0 {
		return fmt.Errorf("audit verify: %d of %d recordings failed verification", failed, len(ids))
	}
	return nil
}

// verifyOne verifies the recording of id, telling a recording that is
// missing (the index lists its session) from one that is broken.
func verifyOne(ctx context.Context, a *audit.Archive, id string) verifyJSON {
	if _, err := audit.Find(a.Dir, id); err != nil {
		return verifyJSON{ID: id, Result: resultFail,
			Error: fmt.Sprintf("no recording in %s (removed or never written)", a.Dir)}
	}
	res, err := a.Verify(ctx, id)
	return verdictOf(id, res, err)
}

// recordedSessions returns, sorted, the sessions with a recording in the
// archive's directory and those its index lists, so that a removed
// recording fails too.
func recordedSessions(ctx context.Context, a *audit.Archive) ([]string, error) {
	files, err := audit.List(a.Dir)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(files))
	for _, f := range files {
		ids = append(ids, f.Session)
	}
	if a.Index != nil {
		ss, err := a.Index.Sessions(ctx, store.SessionFilter{})
		if err != nil {
			return nil, fmt.Errorf("listing indexed sessions: %w", err)
		}
		for _, s := range ss {
			ids = append(ids, s.ID)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}
