package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// API_WEB_DIR without a built dashboard stops the api at start, naming the
// variable; with one, the api goes on (to the listen address it cannot use).
func TestAPIRoleChecksItsDashboardAtStart(t *testing.T) {
	env := []string{"DATABASE_URL=postgres://u:p@127.0.0.1:1/d", "CLUSTER_TOKEN=t", "API_ADDR=256.0.0.1:0"}
	dir := t.TempDir()
	code, out, errOut := run(t, append(env, "API_WEB_DIR="+dir), "api")
	if code != ExitFailure || !strings.Contains(errOut, "API_WEB_DIR: no built dashboard") || out != "" {
		t.Fatalf("api without a bundle: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html>"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = run(t, append(env, "API_WEB_DIR="+dir), "api")
	if code != ExitFailure || !strings.Contains(errOut, "API_ADDR 256.0.0.1:0") {
		t.Fatalf("api with a bundle: exit %d, stderr %q", code, errOut)
	}
}
