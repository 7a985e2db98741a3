package cli

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/config"
)

func TestGitHubAppFromConfig(t *testing.T) {
	base := config.GitHub{APIURL: "https://api.github.com", WebURL: "https://github.com"}
	if app, err := githubApp(base); app != nil || err != nil {
		t.Fatalf("without GITHUB_APP_ID: %v, %v", app, err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 1024) // only parsed here
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))

	g := base
	g.AppID, g.AppPrivateKey = 7, config.Secret(pemKey)
	if _, err := githubApp(g); err == nil || !strings.Contains(err.Error(), "GITHUB_APP_SLUG") {
		t.Fatalf("without a slug: %v", err)
	}
	g.AppSlug = "zeitwork"
	for _, key := range []string{pemKey, strings.ReplaceAll(pemKey, "\n", `\n`)} {
		g.AppPrivateKey = config.Secret(key)
		if app, err := githubApp(g); err != nil || app == nil {
			t.Fatalf("key %.40q: %v", key, err)
		}
	}
	g.AppPrivateKey = "not a key"
	if _, err := githubApp(g); err == nil || !strings.Contains(err.Error(), "GITHUB_APP_PRIVATE_KEY") || strings.Contains(err.Error(), "not a key") {
		t.Fatalf("a bad key: %v", err)
	}
}
