package devenv

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// GitHubApp is the GitHub App a dev platform plays against its GitHub
// emulator: its secrets are made once and kept in the state directory, so
// that the App's key, its webhook secret and its OAuth client stay the
// same across restarts of `zeitwork dev`.
type GitHubApp struct {
	ClientSecret  string
	WebhookSecret string
	// PrivateKeyPEM is Key as GitHub hands an App's key out (PKCS#1).
	PrivateKeyPEM []byte
	Key           *rsa.PrivateKey
}

// LoadGitHubApp reads dir/github-app.env and dir/github-app.pem (mode
// 0600), creating them on first use.
func LoadGitHubApp(dir string) (GitHubApp, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return GitHubApp{}, err
	}
	envPath, keyPath := filepath.Join(dir, "github-app.env"), filepath.Join(dir, "github-app.pem")
	app, err := readGitHubApp(envPath, keyPath)
	if errors.Is(err, os.ErrNotExist) {
		return newGitHubApp(envPath, keyPath)
	}
	return app, err
}

func readGitHubApp(envPath, keyPath string) (GitHubApp, error) {
	f, err := os.Open(envPath)
	if err != nil {
		return GitHubApp{}, err
	}
	defer f.Close()
	var app GitHubApp
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "GITHUB_CLIENT_SECRET":
			app.ClientSecret = v
		case "GITHUB_WEBHOOK_SECRET":
			app.WebhookSecret = v
		}
	}
	if app.ClientSecret == "" || app.WebhookSecret == "" {
		return GitHubApp{}, fmt.Errorf("%s is incomplete; delete it and %s to make a new dev GitHub App", envPath, keyPath)
	}
	if app.PrivateKeyPEM, err = os.ReadFile(keyPath); err != nil {
		return GitHubApp{}, err
	}
	block, _ := pem.Decode(app.PrivateKeyPEM)
	if block == nil {
		return GitHubApp{}, fmt.Errorf("%s holds no PEM block; delete it and %s to make a new dev GitHub App", keyPath, envPath)
	}
	if app.Key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return GitHubApp{}, fmt.Errorf("%s: %w", keyPath, err)
	}
	return app, nil
}

func newGitHubApp(envPath, keyPath string) (GitHubApp, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return GitHubApp{}, err
	}
	app := GitHubApp{
		ClientSecret: randomHex(20), WebhookSecret: randomHex(20), Key: key,
		PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}
	// The key first: a half-written pair is then an env file missing,
	// which is made again with a new key.
	if err := os.WriteFile(keyPath, app.PrivateKeyPEM, 0o600); err != nil {
		return GitHubApp{}, err
	}
	content := "GITHUB_CLIENT_SECRET=" + app.ClientSecret + "\nGITHUB_WEBHOOK_SECRET=" + app.WebhookSecret + "\n"
	if err := os.WriteFile(envPath, []byte(content), 0o600); err != nil {
		return GitHubApp{}, err
	}
	return app, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}
