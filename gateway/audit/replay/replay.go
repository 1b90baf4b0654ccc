package replay

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/protocols"
)

// Formats of Options.Format.
const (
	FormatText = "text" // a transcript for people
	FormatJSON = "json" // one event per line
)

// Options configure Play. The zero value plays a text transcript with no
// waiting; set Speed to 1 for the original timing.
type Options struct {
	// Speed divides the time between events: 1 is the original timing, 2
	// twice as fast, 0 no waiting at all.
	Speed float64
	// Format is FormatText (the default when empty) or FormatJSON.
	Format string
	// Sleep waits d or until ctx is done; default a timer. Tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	// Keys, if set, verify the seal at the end too: a seal that does not
	// verify fails Play after the session's end was played. A recording
	// without a seal (still being written, or cut short) plays, with a
	// last line saying so in the text format.
	Keys audit.Keys
}

// Event is one line of the JSON format: a record of the recording with its
// offset from the first record.
type Event struct {
	Seq    int64           `json:"seq"`
	Time   time.Time       `json:"time"`
	Offset float64         `json:"offset_ms"`
	Type   string          `json:"type"`
	Data   json.RawMessage `json:"data"`
}

// Play writes the recording at path to w, waiting between events as
// opts say. It verifies the hash chain as it reads: a record is written
// only once the next one has confirmed it (or the recording ended there),
// so a broken recording plays up to the record an error names and Play
// then returns the *audit.ChainError. A done ctx stops Play with its error.
func Play(ctx context.Context, path string, w io.Writer, opts Options) error {
	if math.IsNaN(opts.Speed) || math.IsInf(opts.Speed, 0) || opts.Speed < 0 {
		return fmt.Errorf("replaying recording: speed %v: want 0 (no waiting) or more", opts.Speed)
	}
	switch opts.Format {
	case "":
		opts.Format = FormatText
	case FormatText, FormatJSON:
	default:
		return fmt.Errorf("replaying recording: unknown format %q, want %s or %s", opts.Format, FormatText, FormatJSON)
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	id, _ := audit.ParseName(path)
	p := &player{opts: opts, w: bufio.NewWriterSize(w, 32<<10)}
	var (
		held    audit.Record
		holding bool
	)
	each := func(r audit.Record) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if holding {
			if err := p.play(ctx, held); err != nil {
				return err
			}
		}
		held, holding = r, true
		return nil
	}
	var err error
	unsealed := false
	if opts.Keys != nil {
		_, err = audit.ReadVerified(path, opts.Keys, each)
		if errors.Is(err, audit.ErrUnsealed) {
			err, unsealed = nil, true
		}
	} else {
		err = audit.Read(path, each)
	}
	var ce *audit.ChainError
	switch {
	case err == nil && holding:
		err = p.play(ctx, held)
	case errors.As(err, &ce) && holding && held.Seq < int64(ce.Seq):
		// The break is past the held record, which the chain confirmed.
		if perr := p.play(ctx, held); perr != nil {
			err = perr
		}
	}
	if err == nil {
		p.finish()
		if unsealed && opts.Format == FormatText {
			fmt.Fprintln(p.w, "-- not sealed: the session is still being recorded, or its recording was cut short")
		}
	}
	if ferr := p.w.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("writing replay: %w", ferr)
	}
	if err != nil {
		if id == "" {
			return fmt.Errorf("replaying recording: %w", err)
		}
		return fmt.Errorf("replaying session %s: %w", id, err)
	}
	return nil
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// player is the state of one replay.
type player struct {
	opts  Options
	w     *bufio.Writer
	n     int       // records played
	first time.Time // time of the first record
	last  time.Time // time of the last record played
	start protocols.SessionStart
	ended bool
	werr  error
}

// play waits for r's time and writes it.
func (p *player) play(ctx context.Context, r audit.Record) error {
	if p.n == 0 {
		p.first, p.last = r.Time, r.Time
	}
	if d := r.Time.Sub(p.last); p.opts.Speed > 0 && d > 0 {
		if err := p.w.Flush(); err != nil {
			return fmt.Errorf("writing replay: %w", err)
		}
		if err := p.opts.Sleep(ctx, time.Duration(float64(d)/p.opts.Speed)); err != nil {
			return err
		}
	}
	if r.Time.After(p.last) {
		p.last = r.Time
	}
	p.n++
	offset := r.Time.Sub(p.first)
	if p.opts.Format == FormatJSON {
		return p.json(r, offset)
	}
	p.text(r, offset)
	return p.werr
}

func (p *player) json(r audit.Record, offset time.Duration) error {
	data := r.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	b, err := json.Marshal(Event{Seq: r.Seq, Time: r.Time, Offset: math.Round(float64(offset)/1e3) / 1e3,
		Type: string(r.Type), Data: data})
	if err != nil {
		return fmt.Errorf("encoding record %d: %w", r.Seq, err)
	}
	p.w.Write(b)
	if err := p.w.WriteByte('\n'); err != nil {
		return fmt.Errorf("writing replay: %w", err)
	}
	return nil
}

// text writes the lines of r, the first after its offset, the others
// indented under it.
func (p *player) text(r audit.Record, offset time.Duration) {
	p.lines(fmt.Sprintf("[+%.3fs] ", offset.Seconds()), p.render(r))
}

func (p *player) lines(prefix string, lines []string) {
	indent := strings.Repeat(" ", len(prefix))
	for i, l := range lines {
		if i == 0 {
			p.w.WriteString(prefix)
		} else {
			p.w.WriteString(indent)
		}
		p.w.WriteString(strings.TrimRight(l, " "))
		if err := p.w.WriteByte('\n'); err != nil && p.werr == nil {
			p.werr = fmt.Errorf("writing replay: %w", err)
		}
	}
}

// finish notes a recording that ends without its session's end.
func (p *player) finish() {
	if p.opts.Format != FormatText {
		return
	}
	if p.n == 0 {
		p.lines("", []string{"(the recording is empty)"})
		return
	}
	if !p.ended {
		p.lines(fmt.Sprintf("[+%.3fs] ", p.last.Sub(p.first).Seconds()),
			[]string{"(the recording ends here, without the session's end: the session is still open or was cut short)"})
	}
}

// render returns the text lines of r.
func (p *player) render(r audit.Record) []string {
	switch r.Type {
	case protocols.SessionStarted:
		var d protocols.SessionStart
		if json.Unmarshal(r.Data, &d) == nil {
			p.start = d
			return []string{startLine(r.Session, d)}
		}
	case protocols.SessionEnded:
		var d protocols.SessionEnd
		if json.Unmarshal(r.Data, &d) == nil {
			p.ended = true
			return []string{endLine(d)}
		}
	case protocols.AuthzDenied:
		var d protocols.AuthzDeny
		if json.Unmarshal(r.Data, &d) == nil {
			return []string{"DENIED by " + ruleName(d.Rule) + reasonSuffix(d.Reason)}
		}
	case protocols.TCPData:
		var d protocols.TCPDataEvent
		if json.Unmarshal(r.Data, &d) == nil {
			return []string{tcpLine(d)}
		}
	case protocols.PostgresQuery:
		var d protocols.PostgresQueryEvent
		if json.Unmarshal(r.Data, &d) == nil {
			return p.postgres(d)
		}
	case protocols.HTTPRequested:
		var d protocols.HTTPRequestEvent
		if json.Unmarshal(r.Data, &d) == nil {
			return []string{p.httpLine(d)}
		}
	case protocols.GRPCCalled:
		var d protocols.GRPCCallEvent
		if json.Unmarshal(r.Data, &d) == nil {
			return []string{p.grpcLine(d)}
		}
	case audit.SealType:
		var d audit.SealData
		if json.Unmarshal(r.Data, &d) == nil {
			return []string{"recording sealed (key " + Clean(d.Key) + ")"}
		}
	}
	return []string{genericLine(string(r.Type), r.Data)}
}

func startLine(id string, d protocols.SessionStart) string {
	var b strings.Builder
	b.WriteString("session " + Clean(id) + ": ")
	if d.Identity == "" {
		b.WriteString("unauthenticated client")
	} else {
		b.WriteString(Clean(d.Identity))
	}
	if len(d.Groups) > 0 {
		b.WriteString(" [" + Clean(strings.Join(d.Groups, ", ")) + "]")
	}
	if d.Source != "" {
		b.WriteString(" from " + Clean(d.Source))
	}
	if d.Service != "" {
		b.WriteString(" to " + Clean(d.Service))
	}
	var via []string
	if d.Protocol != "" {
		via = append(via, Clean(d.Protocol))
	}
	if d.Agent != "" {
		via = append(via, "agent "+Clean(d.Agent))
	}
	if d.Transport != "" {
		via = append(via, "over "+Clean(d.Transport))
	}
	if len(via) > 0 {
		b.WriteString(" (" + strings.Join(via, ", ") + ")")
	}
	if d.Database != "" || d.User != "" {
		b.WriteString(", database " + orDash(Clean(d.Database)))
		if d.User != "" {
			b.WriteString(" as " + Clean(d.User))
		}
	}
	return b.String()
}

func endLine(d protocols.SessionEnd) string {
	s := fmt.Sprintf("session ended: %s, %d bytes in, %d bytes out, %s", orDash(Clean(d.Outcome)), d.BytesIn, d.BytesOut,
		Duration(float64(d.Duration)))
	if d.Error != "" {
		s += "; error: " + Clean(d.Error)
	}
	return s
}

func tcpLine(d protocols.TCPDataEvent) string {
	dir := Clean(d.Direction)
	switch d.Direction {
	case protocols.ClientToService:
		dir = "client → service"
	case protocols.ServiceToClient:
		dir = "service → client"
	}
	return fmt.Sprintf("%s %d bytes", dir, d.Bytes)
}

// postgres renders a query as psql would have shown it.
func (p *player) postgres(d protocols.PostgresQueryEvent) []string {
	db := p.start.Database
	if db == "" {
		db = p.start.User
	}
	if db == "" {
		db = "postgres"
	}
	db = Clean(db)
	sql := strings.TrimRight(d.SQL, " \t\r\n")
	if !strings.HasSuffix(sql, ";") {
		sql += ";"
	}
	var out []string
	for i, l := range strings.Split(sql, "\n") {
		prompt := db + "=> "
		if i > 0 {
			prompt = db + "-> "
		}
		out = append(out, prompt+Clean(strings.TrimRight(l, "\r")))
	}
	if d.Prepared != "" {
		out = append(out, "-- prepared statement "+strconv.Quote(d.Prepared))
	}
	for i, v := range d.Params {
		if v == nil {
			out = append(out, fmt.Sprintf("-- $%d = NULL", i+1))
		} else {
			out = append(out, fmt.Sprintf("-- $%d = '%s'", i+1, Clean(strings.ReplaceAll(*v, "'", "''"))))
		}
	}
	if len(d.Columns) > 0 {
		out = append(out, Table(d.Columns, d.Result, d.Rows)...)
		if len(d.Completed) > 1 {
			for _, tag := range d.Completed {
				out = append(out, Clean(tag))
			}
		}
	} else {
		for _, tag := range d.Completed {
			out = append(out, Clean(tag))
		}
	}
	var notes []string
	if d.Verdict == protocols.VerdictDeny || d.Error != "" || d.Code != "" {
		msg := d.Error
		if msg == "" {
			msg = d.Reason
		}
		if msg == "" {
			msg = "refused"
		}
		out = append(out, "ERROR:  "+Clean(msg))
		if d.Code != "" {
			notes = append(notes, "SQLSTATE "+Clean(d.Code))
		}
	}
	if d.Rule != "" {
		notes = append(notes, ruleName(d.Rule))
	}
	notes = append(notes, fmt.Sprintf("%.3f ms", d.Duration))
	return append(out, "-- "+strings.Join(notes, ", "))
}

// Table returns the lines of a psql-style aligned table of a query's
// captured rows, ending with its row count: rows is how many the query
// returned, which may be more than were captured. Nil values are NULL,
// shown empty as psql does.
func Table(columns []string, result [][]*string, rows int64) []string {
	n := len(columns)
	for _, row := range result {
		n = max(n, len(row))
	}
	heads := make([]string, n)
	width := make([]int, n)
	numeric := make([]bool, n)
	seen := make([]bool, n)
	for i := range n {
		if i < len(columns) {
			heads[i] = cell(columns[i])
		}
		width[i] = utf8.RuneCountInString(heads[i])
		numeric[i] = true
	}
	cells := make([][]string, len(result))
	for r, row := range result {
		cells[r] = make([]string, n)
		for i, v := range row {
			if v == nil {
				continue
			}
			c := cell(*v)
			cells[r][i] = c
			width[i] = max(width[i], utf8.RuneCountInString(c))
			seen[i] = true
			if _, err := strconv.ParseFloat(*v, 64); err != nil {
				numeric[i] = false
			}
		}
	}
	pad := func(s string, w int, right bool) string {
		fill := strings.Repeat(" ", w-utf8.RuneCountInString(s))
		if right {
			return fill + s
		}
		return s + fill
	}
	line := func(vals []string, align func(i int, s string) string) string {
		parts := make([]string, n)
		for i := range n {
			parts[i] = " " + align(i, vals[i]) + " "
		}
		return strings.TrimRight(strings.Join(parts, "|"), " ")
	}
	out := []string{line(heads, func(i int, s string) string { // centred, as psql does
		left := (width[i] - utf8.RuneCountInString(s)) / 2
		return pad(strings.Repeat(" ", left)+s, width[i], false)
	})}
	rules := make([]string, n)
	for i := range n {
		rules[i] = strings.Repeat("-", width[i]+2)
	}
	out = append(out, strings.Join(rules, "+"))
	for _, row := range cells {
		out = append(out, line(row, func(i int, s string) string { return pad(s, width[i], numeric[i] && seen[i]) }))
	}
	total := max(rows, int64(len(result)))
	count := fmt.Sprintf("(%d rows", total)
	if total == 1 {
		count = "(1 row"
	}
	if int64(len(result)) < total {
		count += fmt.Sprintf(", first %d captured", len(result))
	}
	return append(out, count+")")
}

// cell makes a value fit on one line of a table.
func cell(s string) string {
	s = strings.NewReplacer("\r\n", `\n`, "\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
	return Clean(s)
}

func (p *player) httpLine(d protocols.HTTPRequestEvent) string {
	target := d.Path
	if d.Query != "" {
		target += "?" + d.Query
	}
	status := "---"
	if d.Status != 0 {
		status = strconv.Itoa(d.Status)
	}
	parts := []string{"→ " + Clean(d.Method) + " " + Clean(target), status, Duration(d.Duration)}
	parts = append(parts, p.caller(d.Identity, d.Auth)...)
	if d.Upgrade != "" {
		parts = append(parts, "(upgrade "+Clean(d.Upgrade)+")")
	}
	parts = append(parts, verdict(d.Verdict, d.Rule, d.Reason))
	if d.Error != "" {
		parts = append(parts, "error: "+Clean(d.Error))
	}
	return strings.Join(nonEmpty(parts), "  ")
}

func (p *player) grpcLine(d protocols.GRPCCallEvent) string {
	status := fmt.Sprintf("%s (%d)", codes.Code(d.Status), d.Status)
	if d.Message != "" {
		status += ": " + Clean(d.Message)
	}
	parts := []string{"→ " + Clean(d.Method), status, Duration(d.Duration)}
	parts = append(parts, p.caller(d.Identity, d.Auth)...)
	parts = append(parts, verdict(d.Verdict, d.Rule, d.Reason))
	return strings.Join(nonEmpty(parts), "  ")
}

// caller names who made a request when it is not the session's own
// identity by its SVID (a bearer token, say).
func (p *player) caller(identity, auth string) []string {
	var out []string
	if identity != "" && identity != p.start.Identity {
		out = append(out, "as "+Clean(identity))
	}
	if auth != "" && auth != protocols.AuthSVID {
		out = append(out, "("+Clean(auth)+")")
	}
	return out
}

func verdict(v, rule, reason string) string {
	switch {
	case v == protocols.VerdictDeny:
		return "DENIED by " + ruleName(rule) + reasonSuffix(reason)
	case rule != "":
		return "(" + ruleName(rule) + ")"
	}
	return ""
}

func ruleName(rule string) string {
	if rule == "" {
		return "no rule"
	}
	return "rule " + strconv.Quote(rule)
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + Clean(reason)
}

// genericLine shows an event of a type this package does not know.
func genericLine(typ string, data json.RawMessage) string {
	const maxData = 200
	s := string(data)
	if len(s) > maxData {
		cut := maxData
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	if s == "" || s == "null" {
		return Clean(typ)
	}
	return Clean(typ) + " " + Clean(s)
}

// Duration formats a duration in milliseconds as a short string: 0.42ms,
// 12ms, 1.234s.
func Duration(ms float64) string {
	switch {
	case ms < 0:
		return "-"
	case ms == 0:
		return "0ms"
	case ms < 1:
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	case ms < 1000:
		return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
	}
	return time.Duration(ms * float64(time.Millisecond)).Round(time.Millisecond).String()
}

func nonEmpty(ss []string) []string {
	out := ss[:0]
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Clean makes text from a recording safe to print on a terminal: control
// characters but tabs (escape sequences a client may have sent as SQL or a
// path), invalid UTF-8 and bidirectional overrides are shown as escapes.
func Clean(s string) string {
	ok := true
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unsafeRune(r, size) {
			ok = false
			break
		}
		i += size
	}
	if ok {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafeRune(r, size):
			if r < 0x100 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

func unsafeRune(r rune, size int) bool {
	switch {
	case r == utf8.RuneError && size == 1:
		return true
	case r < 0x20 && r != '\t', r == 0x7f, 0x80 <= r && r <= 0x9f:
		return true
	case 0x202a <= r && r <= 0x202e, 0x2066 <= r && r <= 0x2069:
		return true
	}
	return false
}
