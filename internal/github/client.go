// Package github is Zeitwork's client for GitHub's REST API as a GitHub App:
// it signs the App's JWT, mints and caches installation tokens, and
// downloads a repository's tarball at a commit. It speaks the real wire
// protocol against a configurable base URL, so tests (and GitHub Enterprise
// Server) only change the URL.
package github

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultBaseURL is github.com's REST API.
const DefaultBaseURL = "https://api.github.com"

// apiVersion pins the REST API version the client was written against.
const apiVersion = "2022-11-28"

// Config says which App the client acts as, and where GitHub is.
type Config struct {
	// BaseURL is the REST API's root; DefaultBaseURL when empty. For
	// GitHub Enterprise Server: https://HOST/api/v3.
	BaseURL string
	// AppID is the App's id (the JWT's issuer).
	AppID int64
	// PrivateKey is the App's private key, PEM (PKCS#1 as GitHub hands it
	// out, or PKCS#8).
	PrivateKey []byte
	// HTTPClient sends the requests; http.DefaultClient's transport when
	// nil. Its redirect policy is replaced: the client follows redirects
	// itself so that credentials never leave the API's host. Leave its
	// Timeout zero: it would cut off large downloads; the caller's context
	// bounds each call.
	HTTPClient *http.Client
}

// Client is safe for concurrent use.
type Client struct {
	base  string // without a trailing slash
	appID int64
	key   *rsa.PrivateKey
	http  *http.Client

	mu     sync.Mutex
	tokens map[int64]*tokenEntry
}

// New checks cfg and returns a client; nothing is sent yet.
func New(cfg Config) (*Client, error) {
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("github: base URL %q is not an http(s) URL", base)
	}
	if cfg.AppID <= 0 {
		return nil, errors.New("github: app id is required")
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM(cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("github: app private key: %w", err)
	}
	hc := http.Client{}
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{
		base:   strings.TrimSuffix(base, "/"),
		appID:  cfg.AppID,
		key:    key,
		http:   &hc,
		tokens: map[int64]*tokenEntry{},
	}, nil
}

func (c *Client) newRequest(ctx context.Context, method, path, bearer string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("github: %w", err)
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", apiVersion)
	req.Header.Set("User-Agent", "zeitwork") // GitHub refuses requests without one
	req.Header.Set("Authorization", "Bearer "+bearer)
	return req, nil
}

const maxRedirects = 5

// do sends req and follows redirects itself. The Authorization header goes
// only to the host it was meant for: GitHub answers a tarball request with
// a redirect to codeload, whose URL carries its own short-lived token, and
// the installation token must not travel along (net/http would keep it for
// the same host name on another port, and for subdomains).
func (c *Client) do(req *http.Request) (*http.Response, error) {
	origin := req.URL
	for hops := 0; ; hops++ {
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("github: %w", err)
		}
		switch resp.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
			http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		default:
			return resp, nil
		}
		loc := resp.Header.Get("Location")
		drain(resp)
		if hops == maxRedirects {
			return nil, fmt.Errorf("github: %s: more than %d redirects", origin.Redacted(), maxRedirects)
		}
		next, err := req.URL.Parse(loc)
		if loc == "" || err != nil {
			return nil, fmt.Errorf("github: %s: redirect to an invalid location %q", origin.Redacted(), loc)
		}
		if req.URL.Scheme == "https" && next.Scheme != "https" {
			return nil, fmt.Errorf("github: %s: refusing redirect from https to %s", origin.Redacted(), next.Scheme)
		}
		nreq, err := http.NewRequestWithContext(req.Context(), http.MethodGet, next.String(), nil)
		if err != nil {
			return nil, fmt.Errorf("github: %w", err)
		}
		nreq.Header = req.Header.Clone()
		if next.Scheme != origin.Scheme || next.Host != origin.Host {
			nreq.Header.Del("Authorization")
		}
		req = nreq
	}
}

// drain reads a little of a body we are done with, so the connection can
// be reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
