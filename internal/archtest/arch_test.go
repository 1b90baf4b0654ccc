package archtest

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const mod = "github.com/postern/postern"

type pkg struct {
	ImportPath   string
	Dir          string
	Doc          string
	Imports      []string
	GoFiles      []string
	TestImports  []string
	XTestImports []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-json", mod+"/...")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages, want the whole module", len(pkgs))
	}
	return pkgs
}

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, mod), "/") }

// TestImportRules: protocols/** never imports gateway/**, agent/** or cmd/;
// pki/** imports nothing of ours but pki/** (tests included).
func TestImportRules(t *testing.T) {
	for _, p := range listPackages(t) {
		from := rel(p.ImportPath)
		all := append(append(append([]string{}, p.Imports...), p.TestImports...), p.XTestImports...)
		for _, imp := range all {
			if !strings.HasPrefix(imp, mod+"/") {
				continue
			}
			to := rel(imp)
			switch {
			case strings.HasPrefix(from, "protocols") &&
				(strings.HasPrefix(to, "gateway") || strings.HasPrefix(to, "agent") || strings.HasPrefix(to, "cmd")):
				t.Errorf("%s imports %s: protocols/** must not know the gateway or the agent", from, to)
			case strings.HasPrefix(from, "pki") && !strings.HasPrefix(to, "pki"):
				t.Errorf("%s imports %s: pki imports nothing of ours but pki/**", from, to)
			}
		}
	}
}

// TestPackageDocs: every package has a doc comment saying why it exists.
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s: no package doc comment (add a doc.go)", rel(p.ImportPath))
		}
	}
}

// TestOnlyCmdReadsEnvironment: configuration comes in through flags and
// files read by cmd/, never from environment variables deep in a package.
func TestOnlyCmdReadsEnvironment(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.HasPrefix(rel(p.ImportPath), "cmd") {
			continue
		}
		for _, f := range p.GoFiles {
			data, err := os.ReadFile(filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			for _, call := range []string{"os.Getenv(", "os.LookupEnv(", "os.Environ("} {
				if strings.Contains(string(data), call) {
					t.Errorf("%s/%s calls %s: only cmd/ reads the environment", rel(p.ImportPath), f, call)
				}
			}
		}
	}
}
