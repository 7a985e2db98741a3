package devenv_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeitwork/zeitwork/internal/devenv"
)

// TestGitHubAppIsMadeOnce: the dev GitHub App's key and secrets are made
// on the first run and the same on every run after, private to root.
func TestGitHubAppIsMadeOnce(t *testing.T) {
	dir := t.TempDir()
	first, err := devenv.LoadGitHubApp(dir)
	if err != nil {
		t.Fatal(err)
	}
	if first.ClientSecret == "" || first.WebhookSecret == "" || first.ClientSecret == first.WebhookSecret || first.Key == nil {
		t.Fatalf("new app %+v", first)
	}
	again, err := devenv.LoadGitHubApp(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.ClientSecret != first.ClientSecret || again.WebhookSecret != first.WebhookSecret ||
		!bytes.Equal(again.PrivateKeyPEM, first.PrivateKeyPEM) || !again.Key.Equal(first.Key) {
		t.Fatal("the second run made another app")
	}
	for _, f := range []string{"github-app.env", "github-app.pem"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		} else if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", f, st.Mode())
		}
	}

	os.WriteFile(filepath.Join(dir, "github-app.env"), []byte("GITHUB_CLIENT_SECRET=x\n"), 0o600)
	if _, err := devenv.LoadGitHubApp(dir); err == nil {
		t.Fatal("an incomplete github-app.env was accepted")
	}
}
