package github_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// appKey is the App's key pair, made once: 2048-bit generation is slow.
var appKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func pkcs1PEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func pkcs8PEM(k *rsa.PrivateKey) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b})
}

// fakeGitHub answers the two endpoints the client uses the way GitHub
// does: it verifies the App's JWT against the App's public key, issues
// installation tokens, and answers a tarball request with a redirect to a
// separate codeload server that wants no Authorization header but a token
// in its URL.
type fakeGitHub struct {
	t             *testing.T
	appID         int64
	pub           *rsa.PublicKey
	api, codeload *httptest.Server

	tokenTTL      time.Duration
	tokenRequests atomic.Int32

	mu            sync.Mutex
	installations map[int64][]string   // installation → "owner/repo" it may read
	tarballs      map[string][]byte    // "owner/repo@ref" → tar.gz
	tokens        map[string]fakeToken // installation token → what it is for
	downloads     map[string]string    // codeload token → "owner/repo@ref"
	codeloadAuth  []string             // Authorization headers codeload saw
	apiHook       func(http.ResponseWriter, *http.Request) bool
	codeloadHook  func(http.ResponseWriter, *http.Request) bool
	revoked       map[string]bool
}

type fakeToken struct {
	installation int64
	expires      time.Time
}

func newFakeGitHub(t *testing.T, appID int64) *fakeGitHub {
	f := &fakeGitHub{
		t: t, appID: appID, pub: &appKey().PublicKey, tokenTTL: time.Hour,
		installations: map[int64][]string{}, tarballs: map[string][]byte{},
		tokens: map[string]fakeToken{}, downloads: map[string]string{}, revoked: map[string]bool{},
	}
	api := http.NewServeMux()
	api.HandleFunc("POST /app/installations/{id}/access_tokens", f.accessTokens)
	api.HandleFunc("GET /repos/{owner}/{repo}/tarball/{ref...}", f.tarball)
	f.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") != "application/vnd.github+json" || r.Header.Get("X-GitHub-Api-Version") != "2022-11-28" {
			t.Errorf("%s %s: Accept %q, X-GitHub-Api-Version %q", r.Method, r.URL.Path, r.Header.Get("Accept"), r.Header.Get("X-GitHub-Api-Version"))
		}
		f.mu.Lock()
		hook := f.apiHook
		f.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(f.api.Close)
	codeload := http.NewServeMux()
	codeload.HandleFunc("GET /{owner}/{repo}/legacy.tar.gz/{ref...}", f.codeloadTarball)
	f.codeload = httptest.NewServer(codeload)
	t.Cleanup(f.codeload.Close)
	return f
}

func (f *fakeGitHub) addRepo(installation int64, fullName, ref string, tgz []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.installations[installation] = append(f.installations[installation], fullName)
	f.tarballs[fullName+"@"+ref] = tgz
}

func ghError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

func (f *fakeGitHub) accessTokens(w http.ResponseWriter, r *http.Request) {
	f.tokenRequests.Add(1)
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		ghError(w, http.StatusUnauthorized, "A JSON web token could not be decoded")
		return
	}
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return f.pub, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuedAt(), jwt.WithExpirationRequired())
	if err != nil {
		ghError(w, http.StatusUnauthorized, "A JSON web token could not be decoded")
		return
	}
	now := time.Now()
	iat, exp := claims.IssuedAt.Time, claims.ExpiresAt.Time
	switch {
	case claims.Issuer != strconv.FormatInt(f.appID, 10):
		ghError(w, http.StatusUnauthorized, "'Issuer' claim ('iss') must be an Integer")
	case exp.Sub(iat) > 10*time.Minute || exp.After(now.Add(10*time.Minute)):
		ghError(w, http.StatusUnauthorized, "'Expiration time' claim ('exp') is too far in the future")
	case now.Sub(iat) < 30*time.Second:
		f.t.Errorf("iat %s is not backdated against clock drift", iat)
		ghError(w, http.StatusUnauthorized, "'Issued at' claim ('iat') must be an Integer representing a time in the past")
	default:
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		f.mu.Lock()
		_, known := f.installations[id]
		tok := "ghs_" + randomHex(18)
		exp := now.Add(f.tokenTTL).UTC().Truncate(time.Second)
		if known {
			f.tokens[tok] = fakeToken{installation: id, expires: exp}
		}
		f.mu.Unlock()
		if !known {
			ghError(w, http.StatusNotFound, "Not Found")
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{
			"token": tok, "expires_at": exp.Format(time.RFC3339),
			"permissions": map[string]string{"contents": "read", "metadata": "read"}, "repository_selection": "selected",
		})
	}
}

func (f *fakeGitHub) tarball(w http.ResponseWriter, r *http.Request) {
	raw, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	defer f.mu.Unlock()
	tok, ok := f.tokens[raw]
	if !ok || time.Now().After(tok.expires) || f.revoked[raw] {
		ghError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	full := r.PathValue("owner") + "/" + r.PathValue("repo")
	key := full + "@" + r.PathValue("ref")
	_, exists := f.tarballs[key]
	allowed := false
	for _, repo := range f.installations[tok.installation] {
		allowed = allowed || repo == full
	}
	if !exists || !allowed {
		ghError(w, http.StatusNotFound, "Not Found") // GitHub hides private repositories this way
		return
	}
	dl := randomHex(16)
	f.downloads[dl] = key
	http.Redirect(w, r, fmt.Sprintf("%s/%s/legacy.tar.gz/%s?token=%s", f.codeload.URL, full, r.PathValue("ref"), dl), http.StatusFound)
}

func (f *fakeGitHub) codeloadTarball(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.codeloadAuth = append(f.codeloadAuth, r.Header.Get("Authorization"))
	key, ok := f.downloads[r.URL.Query().Get("token")]
	body := f.tarballs[key]
	hook := f.codeloadHook
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "" {
		http.Error(w, "unexpected Authorization header", http.StatusBadRequest)
		return
	}
	if !ok || key != r.PathValue("owner")+"/"+r.PathValue("repo")+"@"+r.PathValue("ref") {
		http.Error(w, "bad token", http.StatusNotFound)
		return
	}
	if hook != nil && hook(w, r) {
		return
	}
	w.Header().Set("Content-Type", "application/x-gzip")
	w.Write(body)
}

func (f *fakeGitHub) setTokenTTL(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokenTTL = d
}

func (f *fakeGitHub) setAPIHook(h func(http.ResponseWriter, *http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apiHook = h
}

func (f *fakeGitHub) setCodeloadHook(h func(http.ResponseWriter, *http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.codeloadHook = h
}

func (f *fakeGitHub) revoke(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked[tok] = true
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
