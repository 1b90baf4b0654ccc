package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres/classify"
)

// MaxSize is the largest policy file Load reads.
const MaxSize = 16 << 20

// maxNodes bounds the YAML nodes Parse visits, counting every use of an
// alias, so that a small document cannot expand into a huge policy.
const maxNodes = 200_000

// maxMergeDepth bounds nested merge keys (<<).
const maxMergeDepth = 16

// Parse compiles a policy document. When the document is invalid the error
// is an *Error listing every problem found. An empty document, or one with
// no rules, is a valid policy that denies everything.
func Parse(data []byte) (*Policy, error) {
	ps := &parser{data: data, budget: maxNodes}
	rules := ps.parse()
	if len(ps.problems) > 0 {
		slices.SortStableFunc(ps.problems, func(a, b Problem) int {
			if a.Line != b.Line {
				return a.Line - b.Line
			}
			return a.Column - b.Column
		})
		return nil, &Error{Problems: ps.problems}
	}
	return newPolicy(rules, data), nil
}

// Load reads and compiles the policy file at path. Problems in the document
// are reported as an *Error whose Path is path.
func Load(path string) (*Policy, error) {
	p, _, err := load(path)
	return p, err
}

// load is Load that also returns the bytes it parsed, nil when it could
// not read them.
func load(path string) (*Policy, []byte, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, nil, err
	}
	p, err := Parse(data)
	if err != nil {
		var perr *Error
		if errors.As(err, &perr) {
			perr.Path = path
		}
		return nil, data, err
	}
	return p, data, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading policy %s: %w", path, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("reading policy %s: larger than %d bytes", path, MaxSize)
	}
	return data, nil
}

type parser struct {
	data     []byte
	problems []Problem
	seen     map[Problem]bool
	budget   int
}

// errTooLarge stops a parse that visited maxNodes nodes.
var errTooLarge = errors.New("too many nodes")

func (p *parser) parse() (rules []Rule) {
	defer func() {
		switch v := recover(); v {
		case nil:
		case errTooLarge:
			rules = nil
			p.problems = append(p.problems, Problem{Line: 1, Column: 1,
				Message: fmt.Sprintf("policy too large: more than %d YAML nodes once aliases are expanded", maxNodes)})
		default:
			rules = nil
			p.problems = append(p.problems, Problem{Line: 1, Column: 1,
				Message: fmt.Sprintf("invalid YAML: %v", v)})
		}
	}()

	dec := yaml.NewDecoder(bytes.NewReader(p.data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		p.yamlError(err)
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		p.yamlError(err)
		return nil
	default:
		p.addf(&extra, "only one YAML document is allowed in a policy")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	root := p.resolve(doc.Content[0])
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.addf(root, "a policy is a mapping with a \"rules\" key")
		return nil
	}
	for _, f := range p.fields(root, "the policy", 0) {
		switch f.name {
		case "rules":
			rules = p.rules(f)
		default:
			p.unknownKey(f, "at the top of the policy", topKeys)
		}
	}
	return rules
}

var (
	topKeys      = []string{"rules"}
	ruleKeys     = []string{"name", "effect", "identities", "services", "postgres", "http", "grpc", "rate"}
	postgresKeys = []string{"databases", "users", "statements"}
	httpKeys     = []string{"methods", "paths", "rate"}
	grpcKeys     = []string{"methods", "rate"}
)

func (p *parser) rules(f field) []Rule {
	n := p.resolve(f.val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.addf(n, "\"rules\" must be a list of rules")
		return nil
	}
	rules := make([]Rule, 0, len(n.Content))
	first := map[string]int{}
	for i, item := range n.Content {
		r, ok := p.rule(item, i+1)
		if !ok {
			continue
		}
		if r.Name != "" {
			if line, dup := first[r.Name]; dup {
				p.problems = append(p.problems, Problem{Line: r.nameLine, Column: r.nameCol,
					Message: fmt.Sprintf("duplicate rule name %q (first at line %d)", r.Name, line)})
			} else {
				first[r.Name] = r.Line
			}
		}
		rules = append(rules, r.Rule)
	}
	return rules
}

// parsedRule carries what rules needs beyond the Rule.
type parsedRule struct {
	Rule
	nameLine, nameCol int
}

func (p *parser) rule(item *yaml.Node, index int) (parsedRule, bool) {
	n := p.resolve(item)
	if n.Kind != yaml.MappingNode {
		p.addf(n, "rule #%d must be a mapping with name, identities and services", index)
		return parsedRule{}, false
	}
	r := parsedRule{Rule: Rule{Line: n.Line}}
	fields := p.fields(n, fmt.Sprintf("rule #%d", index), 0)

	// The name first, so that every other problem can say which rule.
	where := fmt.Sprintf("rule #%d", index)
	named := false
	for _, f := range fields {
		if f.name != "name" {
			continue
		}
		named = true
		if name, ok := p.scalar(f.val, "name", where); ok {
			switch {
			case name == protocols.DefaultDeny:
				p.addf(f.val, "rule name %q is reserved for decisions that no rule made", name)
			case strings.TrimSpace(name) != name || hasControl(name):
				p.addf(f.val, "rule name %q must not have control characters or surrounding spaces", name)
			default:
				r.Name = name
				r.nameLine, r.nameCol = f.val.Line, f.val.Column
				where = fmt.Sprintf("rule %q", name)
			}
		}
	}
	if !named {
		p.addf(n, "missing name in %s", where)
	}

	var haveIdentities, haveServices bool
	for _, f := range fields {
		switch f.name {
		case "name":
		case "effect":
			if s, ok := p.scalar(f.val, "effect", where); ok {
				switch s {
				case "allow":
					r.Effect = Allow
				case "deny":
					r.Effect = Deny
				default:
					p.addf(f.val, "bad effect %q in %s: want allow or deny", s, where)
				}
			}
		case "identities":
			haveIdentities = true
			r.Identities = p.strings(f, where, func(v *yaml.Node, s string) {
				ip, err := compileIdentity(s)
				if err != nil {
					var pe *patternError
					if errors.As(err, &pe) {
						p.addf(v, "%s", pe.in(where))
					} else {
						p.addf(v, "%v in %s", err, where)
					}
					return
				}
				r.identities = append(r.identities, ip)
			})
			if len(r.Identities) == 0 && isEmpty(f.val) {
				p.addf(f.key, "empty identities in %s", where)
			}
		case "services":
			haveServices = true
			r.Services = p.strings(f, where, func(v *yaml.Node, s string) {
				g, err := compileGlob(s, "/")
				if err != nil {
					p.addf(v, "bad service pattern in %s: %v", where, err)
					return
				}
				r.services = append(r.services, g)
			})
			if len(r.Services) == 0 && isEmpty(f.val) {
				p.addf(f.key, "empty services in %s", where)
			}
		case "postgres":
			r.Postgres = p.postgres(f, where)
		case "http":
			r.HTTP = p.httpSection(f, where)
		case "grpc":
			r.GRPC = p.grpcSection(f, where)
		case "rate":
			r.Rate = p.rate(f.val, where)
		default:
			p.unknownKey(f, "in "+where, ruleKeys)
		}
	}
	if r.Effect == Deny {
		p.noRateInDeny(fields, where)
	}
	if !haveIdentities {
		p.addf(n, "missing identities in %s", where)
	}
	if !haveServices {
		p.addf(n, "missing services in %s", where)
	}
	return r, true
}

// noRateInDeny reports the rates of a deny rule, which would never apply.
func (p *parser) noRateInDeny(fields []field, where string) {
	for _, f := range fields {
		switch f.name {
		case "rate":
			p.addf(f.key, "rate in deny %s has no effect", where)
		case "http", "grpc":
			n := p.resolve(f.val)
			if n.Kind != yaml.SequenceNode {
				continue
			}
			for _, item := range n.Content {
				m := p.resolve(item)
				if m.Kind != yaml.MappingNode {
					continue
				}
				for i := 0; i+1 < len(m.Content); i += 2 {
					if k := p.resolve(m.Content[i]); k.Kind == yaml.ScalarNode && k.Value == "rate" {
						p.addf(k, "rate in deny %s has no effect", where)
					}
				}
			}
		}
	}
}

func (p *parser) postgres(f field, where string) *PostgresRule {
	n := p.resolve(f.val)
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		if isNull(n) || n.Kind == yaml.MappingNode {
			p.addf(f.key, "empty postgres section in %s: leave it out to allow every statement", where)
		} else {
			p.addf(n, "postgres in %s must be a mapping of databases, users and statements", where)
		}
		return &PostgresRule{}
	}
	pg := &PostgresRule{}
	for _, f := range p.fields(n, "the postgres section of "+where, 0) {
		switch f.name {
		case "databases":
			pg.Databases = p.nonEmptyStrings(f, where, "every database", func(v *yaml.Node, s string) {
				g, err := compileGlob(s, "")
				if err != nil {
					p.addf(v, "bad database pattern in %s: %v", where, err)
					return
				}
				pg.databases = append(pg.databases, g)
			})
		case "users":
			pg.Users = p.nonEmptyStrings(f, where, "every database role", func(v *yaml.Node, s string) {
				g, err := compileGlob(s, "")
				if err != nil {
					p.addf(v, "bad database role pattern in %s: %v", where, err)
					return
				}
				pg.users = append(pg.users, g)
			})
		case "statements":
			pg.Statements = p.nonEmptyStrings(f, where, "every statement", func(v *yaml.Node, s string) {
				switch {
				case s == ClassRead || s == ClassWrite || s == ClassDDL || s == ClassAdmin:
					if !slices.Contains(pg.Classes, s) {
						pg.Classes = append(pg.Classes, s)
					}
				case isCommandTag(s) && !classify.KnownTag(s):
					hint := ""
					if t := suggestTag(s); t != "" {
						hint = fmt.Sprintf(" (did you mean %q?)", t)
					}
					p.addf(v, "unknown command tag %q in %s: Postgres never reports it, so it would never match%s", s, where, hint)
				case isCommandTag(s):
					if !slices.Contains(pg.Tags, s) {
						pg.Tags = append(pg.Tags, s)
					}
				default:
					p.addf(v, "unknown statement class %q in %s: classes are read, write, ddl and admin; command tags are upper case, like SELECT or \"CREATE TABLE\"", s, where)
				}
			})
		default:
			p.unknownKey(f, "in the postgres section of "+where, postgresKeys)
		}
	}
	return pg
}

// isCommandTag reports whether s looks like a Postgres command tag: upper
// case words separated by single spaces.
func isCommandTag(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' || s[len(s)-1] == ' ' || strings.Contains(s, "  ") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'A' || c > 'Z') && c != ' ' {
			return false
		}
	}
	return true
}

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"}

func (p *parser) httpSection(f field, where string) []HTTPRule {
	items, ok := p.sectionItems(f, where, "http", "every request")
	if !ok {
		return []HTTPRule{}
	}
	out := make([]HTTPRule, 0, len(items))
	for _, item := range items {
		h := HTTPRule{}
		for _, f := range p.fields(item, "an http entry of "+where, 0) {
			switch f.name {
			case "methods":
				h.Methods = p.nonEmptyStrings(f, where, "every method", func(v *yaml.Node, s string) {
					if s == "*" {
						h.anyMethod = true
						return
					}
					if !slices.Contains(httpMethods, strings.ToUpper(s)) {
						p.addf(v, "unknown HTTP method %q in %s: want one of %s, or \"*\"", s, where, strings.Join(httpMethods, ", "))
					}
				})
				for i, m := range h.Methods {
					h.Methods[i] = strings.ToUpper(m)
				}
			case "paths":
				h.Paths = p.nonEmptyStrings(f, where, "every path", func(v *yaml.Node, s string) {
					pp, err := compilePath(s, true, httpPathChar)
					if err == nil && s == "" {
						err = errors.New("must start with \"/\"")
					}
					if err != nil {
						p.addf(v, "bad http path %q in %s: %v", s, where, err)
						return
					}
					h.paths = append(h.paths, pp)
				})
			case "rate":
				h.Rate = p.rate(f.val, where)
			default:
				p.unknownKey(f, "in an http entry of "+where, httpKeys)
			}
		}
		out = append(out, h)
	}
	return out
}

func httpPathChar(r rune) bool {
	return r > ' ' && r != 0x7f && r != '?' && r != '#' && r != utf8.RuneError
}

func (p *parser) grpcSection(f field, where string) []GRPCRule {
	items, ok := p.sectionItems(f, where, "grpc", "every call")
	if !ok {
		return []GRPCRule{}
	}
	out := make([]GRPCRule, 0, len(items))
	for _, item := range items {
		g := GRPCRule{}
		for _, f := range p.fields(item, "a grpc entry of "+where, 0) {
			switch f.name {
			case "methods":
				g.Methods = p.nonEmptyStrings(f, where, "every call", func(v *yaml.Node, s string) {
					gp, err := compileGRPCMethod(s)
					if err != nil {
						p.addf(v, "bad grpc method %q in %s: %v", s, where, err)
						return
					}
					g.methods = append(g.methods, gp)
				})
			case "rate":
				g.Rate = p.rate(f.val, where)
			default:
				p.unknownKey(f, "in a grpc entry of "+where, grpcKeys)
			}
		}
		out = append(out, g)
	}
	return out
}

func compileGRPCMethod(s string) (grpcPattern, error) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(s, "/"), "/")
	if !strings.HasPrefix(s, "/") || !ok || svc == "" || method == "" {
		return grpcPattern{}, errors.New("want \"/package.Service/Method\", with * and ? as globs within the service and the method")
	}
	sg, err := compileGlob(svc, "/")
	if err != nil {
		return grpcPattern{}, err
	}
	mg, err := compileGlob(method, "/")
	if err != nil {
		return grpcPattern{}, err
	}
	return grpcPattern{service: sg, method: mg}, nil
}

// sectionItems returns the entries of an http or grpc section, each a
// resolved, non-empty mapping.
func (p *parser) sectionItems(f field, where, section, every string) ([]*yaml.Node, bool) {
	n := p.resolve(f.val)
	if isNull(n) || (n.Kind == yaml.SequenceNode && len(n.Content) == 0) {
		p.addf(f.key, "empty %s section in %s: leave it out to allow %s", section, where, every)
		return nil, false
	}
	if n.Kind != yaml.SequenceNode {
		p.addf(n, "%s in %s must be a list of entries, like - methods: [...]", section, where)
		return nil, false
	}
	var out []*yaml.Node
	for _, item := range n.Content {
		m := p.resolve(item)
		switch {
		case m.Kind != yaml.MappingNode:
			p.addf(m, "each %s entry in %s must be a mapping", section, where)
		case len(m.Content) == 0:
			p.addf(m, "empty %s entry in %s", section, where)
		default:
			out = append(out, m)
		}
	}
	return out, true
}

func (p *parser) rate(v *yaml.Node, where string) *Rate {
	s, ok := p.scalar(v, "rate", where)
	if !ok {
		return nil
	}
	r, err := parseRate(s)
	if err != nil {
		p.addf(p.resolve(v), "bad rate %q in %s: %v", s, where, err)
		return nil
	}
	return &r
}

// parseRate parses "100/s", "10/m" or "1000/h".
func parseRate(s string) (Rate, error) {
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, errors.New("want COUNT/UNIT, like 100/s, 10/m or 1000/h")
	}
	var per time.Duration
	switch unit {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		return Rate{}, fmt.Errorf("unknown unit %q: want s, m or h", unit)
	}
	for i := 0; i < len(num); i++ {
		if num[i] < '0' || num[i] > '9' {
			return Rate{}, fmt.Errorf("count %q is not a whole number", num)
		}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 || n > 1_000_000_000 {
		return Rate{}, fmt.Errorf("count %q must be between 1 and 1000000000", num)
	}
	return Rate{Count: n, Per: per}, nil
}

// field is one key of a mapping, after merges.
type field struct {
	key, val *yaml.Node
	name     string
}

// fields returns the keys of mapping n in order, expanding merge keys (<<)
// whose keys come after n's own; explicit keys win over merged ones.
func (p *parser) fields(n *yaml.Node, where string, depth int) []field {
	var out, merged []field
	first := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := p.resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.addf(k, "keys in %s must be plain words", where)
			continue
		}
		if k.ShortTag() == "!!merge" {
			merged = append(merged, p.merge(v, where, depth+1)...)
			continue
		}
		if prev, dup := first[k.Value]; dup {
			p.addf(k, "duplicate key %q in %s (first at line %d)", k.Value, where, prev.Line)
			continue
		}
		first[k.Value] = k
		out = append(out, field{key: k, val: v, name: k.Value})
	}
	for _, f := range merged {
		if _, dup := first[f.name]; !dup {
			first[f.name] = f.key
			out = append(out, f)
		}
	}
	return out
}

func (p *parser) merge(v *yaml.Node, where string, depth int) []field {
	if depth > maxMergeDepth {
		p.addf(v, "merges (<<) in %s nest too deep", where)
		return nil
	}
	n := p.resolve(v)
	switch n.Kind {
	case yaml.MappingNode:
		return p.fields(n, where, depth)
	case yaml.SequenceNode:
		var out []field
		seen := map[string]bool{}
		for _, item := range n.Content {
			m := p.resolve(item)
			if m.Kind != yaml.MappingNode {
				p.addf(m, "a merge (<<) in %s needs a mapping or a list of mappings", where)
				continue
			}
			for _, f := range p.fields(m, where, depth) {
				if !seen[f.name] {
					seen[f.name] = true
					out = append(out, f)
				}
			}
		}
		return out
	}
	p.addf(n, "a merge (<<) in %s needs a mapping or a list of mappings", where)
	return nil
}

// strings returns the string items of list field f, calling each on every
// one. A null value yields nil.
func (p *parser) strings(f field, where string, each func(v *yaml.Node, s string)) []string {
	n := p.resolve(f.val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.addf(n, "%s in %s must be a list, like [a, b]", f.name, where)
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for _, item := range n.Content {
		v := p.resolve(item)
		s, ok := p.scalar(v, "an item of "+f.name, where)
		if !ok {
			continue
		}
		out = append(out, s)
		each(v, s)
	}
	return out
}

// nonEmptyStrings is strings for optional lists: present, they must have
// items, or the key must be left out to match every.
func (p *parser) nonEmptyStrings(f field, where, every string, each func(v *yaml.Node, s string)) []string {
	out := p.strings(f, where, each)
	if len(out) == 0 {
		if isEmpty(f.val) {
			p.addf(f.key, "empty %s in %s: leave the key out to match %s", f.name, where, every)
		}
		return []string{}
	}
	return out
}

// scalar returns the text of a scalar node, reporting a problem if v is
// null or not a scalar.
func (p *parser) scalar(v *yaml.Node, what, where string) (string, bool) {
	n := p.resolve(v)
	switch {
	case n.Kind != yaml.ScalarNode:
		p.addf(n, "%s in %s must be a single value", what, where)
		return "", false
	case isNull(n):
		p.addf(n, "%s in %s is empty", what, where)
		return "", false
	case n.Value == "":
		p.addf(n, "%s in %s is empty", what, where)
		return "", false
	}
	return n.Value, true
}

func (p *parser) unknownKey(f field, where string, known []string) {
	msg := fmt.Sprintf("unknown key %q %s", f.name, where)
	if s := closest(f.name, known); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	p.addf(f.key, "%s", msg)
}

// suggestTag returns the known command tag that s abbreviates ("TRUNCATE"
// for "TRUNCATE TABLE") or misspells, if any.
func suggestTag(s string) string {
	tags := classify.Tags()
	for _, t := range tags {
		if strings.HasPrefix(t, s+" ") {
			return t
		}
	}
	return closest(s, tags)
}

// closest returns the known word within edit distance 2 of s, if any.
func closest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(s, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// resolve follows aliases and counts the node against the budget.
func (p *parser) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	p.budget--
	if p.budget < 0 {
		panic(errTooLarge)
	}
	if n == nil || n.Kind == yaml.AliasNode {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// isEmpty reports whether n is null or an empty list.
func isEmpty(n *yaml.Node) bool {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n == nil || isNull(n) || n.Kind == yaml.SequenceNode && len(n.Content) == 0
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return true
		}
	}
	return false
}

func (p *parser) addf(n *yaml.Node, format string, args ...any) {
	pr := Problem{Line: n.Line, Column: n.Column, Message: fmt.Sprintf(format, args...)}
	if p.seen == nil {
		p.seen = map[Problem]bool{}
	}
	if p.seen[pr] {
		return // an aliased node reports its problem once
	}
	p.seen[pr] = true
	p.problems = append(p.problems, pr)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError records a syntax error from the YAML parser, finding its
// position when the parser did not give one.
func (p *parser) yamlError(err error) {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		msg := "invalid YAML: " + m[2]
		if strings.Contains(msg, "did not find expected alphabetic or numeric character") {
			msg += " (quote values that start with * or &, like \"*-db\")"
		}
		p.problems = append(p.problems, Problem{Line: line, Message: msg})
		return
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	off := -1
	if name, ok := strings.CutPrefix(msg, "unknown anchor '"); ok {
		name, _, _ = strings.Cut(name, "'")
		off = bytes.Index(p.data, []byte("*"+name))
	}
	if off < 0 {
		off = firstBadByte(p.data)
	}
	pr := Problem{Message: "invalid YAML: " + msg}
	if off >= 0 {
		pr.Line, pr.Column = position(p.data, off)
	}
	p.problems = append(p.problems, pr)
}

// firstBadByte returns the offset of the first invalid UTF-8 sequence or
// disallowed control character in data, or -1.
func firstBadByte(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 || r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return i
		}
		i += n
	}
	return -1
}

func position(data []byte, off int) (line, col int) {
	line = 1 + bytes.Count(data[:off], []byte("\n"))
	col = 1 + utf8.RuneCount(data[bytes.LastIndexByte(data[:off], '\n')+1:off])
	return line, col
}
