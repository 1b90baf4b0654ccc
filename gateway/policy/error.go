package policy

import (
	"strconv"
	"strings"
)

// Problem is one thing wrong with a policy document, at a position in it.
// Line and Column count from 1; Line is 0 when the YAML parser could not
// say where the problem is.
type Problem struct {
	Line, Column int
	Message      string
}

// String returns the problem as "line 3, column 5: message".
func (p Problem) String() string {
	switch {
	case p.Line <= 0:
		return p.Message
	case p.Column <= 0:
		return "line " + strconv.Itoa(p.Line) + ": " + p.Message
	}
	return "line " + strconv.Itoa(p.Line) + ", column " + strconv.Itoa(p.Column) + ": " + p.Message
}

// Error lists every problem of a policy document, in document order.
type Error struct {
	// Path is the file the document came from, set by Load.
	Path     string
	Problems []Problem
}

// Error returns the problems on one line: "line 3: …; line 9: …",
// prefixed with "PATH: " when the document came from a file.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if len(e.Problems) == 0 {
		b.WriteString("invalid policy")
	}
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		if p.Line > 0 {
			b.WriteString("line ")
			b.WriteString(strconv.Itoa(p.Line))
			b.WriteString(": ")
		}
		b.WriteString(p.Message)
	}
	return b.String()
}

// Lines returns one line per problem, "line 3, column 5: message", without
// the path.
func (e *Error) Lines() []string {
	out := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p.String()
	}
	return out
}
