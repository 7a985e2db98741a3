package cli

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/devenv"
	"github.com/zeitwork/zeitwork/internal/githubemu"
)

// The dev GitHub App's public names. Its secrets are made once per state
// directory (devenv.LoadGitHubApp).
const (
	devGitHubAppID    = 1
	devGitHubAppSlug  = "zeitwork-dev"
	devGitHubClientID = "Iv1.zeitworkdev"
)

// devGitHub is where dev's GitHub emulator serves and what the roles are
// told about it.
type devGitHub struct {
	addr, codeloadAddr string
	// url is the emulator as a browser on this machine reaches it: the
	// OAuth redirects go through it.
	url  string
	vars map[string]string
}

// newDevGitHub places the emulator at DEV_PORT_BASE-16 (API and web flow)
// and -15 (codeload), and points every role's GITHUB_* variables at it.
func newDevGitHub(cfg config.Dev, app devenv.GitHubApp) devGitHub {
	g := devGitHub{
		addr:         fmt.Sprintf("127.0.0.1:%d", cfg.PortBase-16),
		codeloadAddr: fmt.Sprintf("127.0.0.1:%d", cfg.PortBase-15),
	}
	g.url = "http://localhost:" + portOf(g.addr)
	g.vars = map[string]string{
		"GITHUB_API_URL":         g.url,
		"GITHUB_WEB_URL":         g.url,
		"GITHUB_CLIENT_ID":       devGitHubClientID,
		"GITHUB_CLIENT_SECRET":   app.ClientSecret,
		"GITHUB_APP_ID":          strconv.Itoa(devGitHubAppID),
		"GITHUB_APP_PRIVATE_KEY": string(app.PrivateKeyPEM),
		"GITHUB_APP_SLUG":        devGitHubAppSlug,
		"GITHUB_WEBHOOK_SECRET":  app.WebhookSecret,
	}
	return g
}

// listen binds the emulator, playing app, delivering to the api at apiAddr.
func (g devGitHub) listen(cfg config.Dev, app devenv.GitHubApp, apiAddr string, log *slog.Logger) (*githubemu.Dev, error) {
	d, err := githubemu.ListenDev(githubemu.DevConfig{
		App: githubemu.App{
			ID: devGitHubAppID, Slug: devGitHubAppSlug, Name: "Zeitwork (dev)", PublicKey: &app.Key.PublicKey,
			ClientID: devGitHubClientID, ClientSecret: app.ClientSecret, WebhookSecret: app.WebhookSecret,
			// The api sends no redirect_uri: GitHub (and the emulator)
			// send the browser to the App's registered callback.
			CallbackURL: devAPIURL(apiAddr) + "/v1/auth/github/callback",
			// "Request user authorization (OAuth) during installation", as
			// the api asks of the App: the install page sends the browser
			// to the callback with a code, which the api's setup exchanges
			// to learn that the installation is the user's.
			AuthorizeOnInstall: true,
		},
		Dir:          filepath.Join(cfg.State(), "github"),
		APIAddr:      g.addr,
		CodeloadAddr: g.codeloadAddr,
		PublicHost:   "localhost",
		WebhookURL:   "http://" + apiAddr + "/v1/webhook/github",
		Log:          log,
	})
	if err != nil {
		return nil, fmt.Errorf("GitHub emulator: %w", err)
	}
	return d, nil
}

// devAPIURL is the api as a browser on this machine reaches it. localhost,
// not 127.0.0.1: the sign-in's cookies belong to the host the browser
// used, and the emulator sends it back to this one.
func devAPIURL(apiAddr string) string {
	_, port, _ := net.SplitHostPort(apiAddr)
	return "http://localhost:" + port
}

// environ turns vars back into KEY=value lines, for a role that parses its
// own configuration from an Env.
func environ(vars map[string]string) []string {
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}
