package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/githubapp"
)

// githubApp is the GitHub App the api role acts as; nil without
// GITHUB_APP_ID, and then no installation or repository routes are served.
// One App per process: its installation tokens are cached for every
// request.
func githubApp(g config.GitHub) (*githubapp.App, error) {
	if g.AppID == 0 {
		return nil, nil
	}
	if g.AppSlug == "" {
		return nil, errors.New("GITHUB_APP_SLUG: must be set with GITHUB_APP_ID (the App's install link is <GITHUB_WEB_URL>/apps/<slug>)")
	}
	key := g.AppPrivateKey.Reveal()
	// A PEM pasted into a one-line variable often has its newlines as \n.
	if !strings.Contains(key, "\n") {
		key = strings.ReplaceAll(key, `\n`, "\n")
	}
	app, err := githubapp.New(githubapp.Config{ID: g.AppID, PrivateKey: []byte(key), Slug: g.AppSlug, APIURL: g.APIURL, WebURL: g.WebURL})
	if err != nil {
		return nil, fmt.Errorf("GITHUB_APP_PRIVATE_KEY: %w", err)
	}
	return app, nil
}
