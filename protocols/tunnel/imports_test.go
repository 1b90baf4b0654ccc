package tunnel_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestImports keeps the tunnel packages in their room: protocols/** never
// imports gateway/** or agent/**, and every package says why it exists.
func TestImports(t *testing.T) {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(gobin, "list", "-f",
		"{{.ImportPath}}|{{.Doc}}|{{join .Deps \" \"}} {{join .TestImports \" \"}} {{join .XTestImports \" \"}}",
		"./...").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/postern/postern/"
	for line := range strings.Lines(strings.TrimSpace(string(out))) {
		pkg, rest, _ := strings.Cut(strings.TrimSpace(line), "|")
		doc, deps, _ := strings.Cut(rest, "|")
		if doc == "" {
			t.Errorf("%s: no package doc comment", pkg)
		}
		for dep := range strings.FieldsSeq(deps) {
			if strings.HasPrefix(dep, mod+"gateway") || strings.HasPrefix(dep, mod+"agent") {
				t.Errorf("%s imports %s", pkg, dep)
			}
		}
	}
}
