// Package registryauth is the registry's token service (the Docker/OCI
// token authentication protocol that the distribution registry and GitLab's
// registry speak). It turns short-lived credentials minted for a principal
// into registry tokens that grant exactly that principal's rights:
//
//   - project-<id>  pull and push on the repository <id> (a build of that
//     project: its images and its build cache), and pull on base/*;
//   - node-<id>     pull on the repositories of the projects with instances
//     on that node, looked up when the token is asked for (node agents);
//   - puller        pull on every repository (tools, not nodes);
//   - admin         everything, delete included (operators).
//
// So a build, which runs customer code next to its credentials, can never
// read or overwrite another project's images, and a compromised node can
// pull only the images of the tenants placed on it.
package registryauth

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Service issues tokens and checks credentials.
type Service struct {
	// Name is the registry's service name (its auth.token.service).
	Name string
	// Issuer is the tokens' issuer (the registry's auth.token.issuer).
	Issuer string
	// Key signs tokens; its certificate is the registry's rootcertbundle.
	Key ed25519.PrivateKey
	// Secret signs the credentials Mint hands out.
	Secret []byte
	// TTL is how long a token lives.
	TTL time.Duration
	Now func() time.Time
	// NodeProjects lists the projects with instances on a node; nil: node
	// principals are granted nothing.
	NodeProjects func(ctx context.Context, node uuid.UUID) ([]uuid.UUID, error)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Principal kinds.
const (
	Puller = "puller"
	Admin  = "admin"
)

// ProjectPrincipal is the principal of a build of project. (No colon in it:
// principals travel as Basic auth user names.)
func ProjectPrincipal(project uuid.UUID) string { return "project-" + project.String() }

// NodePrincipal is the principal of the node agent of node.
func NodePrincipal(node uuid.UUID) string { return "node-" + node.String() }

// nodeOf returns the node a principal names, if it is a node principal.
func nodeOf(principal string) (uuid.UUID, bool) {
	s, ok := strings.CutPrefix(principal, "node-")
	if !ok {
		return uuid.Nil, false
	}
	u, err := uuid.Parse(s)
	return u, err == nil
}

// Mint returns a password for principal, valid for ttl. Passwords are
// stateless (an HMAC over principal and expiry): any replica of the token
// service checks them without a database.
func (s *Service) Mint(principal string, ttl time.Duration) string {
	exp := strconv.FormatInt(s.now().Add(ttl).Unix(), 10)
	return exp + "." + s.mac(principal, exp)
}

func (s *Service) mac(principal, exp string) string {
	m := hmac.New(sha256.New, s.Secret)
	m.Write([]byte(principal + "|" + exp))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// ErrBadCredentials: unknown principal, wrong or expired password.
var ErrBadCredentials = errors.New("registryauth: bad credentials")

// Check verifies a principal's password.
func (s *Service) Check(principal, password string) error {
	exp, mac, ok := strings.Cut(password, ".")
	if !ok || !hmac.Equal([]byte(mac), []byte(s.mac(principal, exp))) {
		return ErrBadCredentials
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || s.now().Unix() > sec {
		return ErrBadCredentials
	}
	if _, ok := nodeOf(principal); ok {
		return nil
	}
	if principal != Puller && principal != Admin {
		p, ok := strings.CutPrefix(principal, "project-")
		if !ok {
			return ErrBadCredentials
		}
		if _, err := uuid.Parse(p); err != nil {
			return ErrBadCredentials
		}
	}
	return nil
}

// Access is one grant in a token: actions on a resource.
type Access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Grant narrows what was asked (scope strings like
// "repository:<name>:pull,push") to what principal may do. Anything not
// allowed is left out, never refused as a whole: the registry then answers
// the client's actual request with 401/403.
func Grant(principal string, scopes []string) []Access {
	return grant(scopes, func(repo, action string) bool { return may(principal, repo, action) })
}

// GrantNode is Grant for a node principal: pull on the repositories of
// projects (those with instances on the node), nothing else.
func GrantNode(projects []uuid.UUID, scopes []string) []Access {
	repos := make(map[string]bool, len(projects))
	for _, p := range projects {
		repos[p.String()] = true
	}
	return grant(scopes, func(repo, action string) bool { return action == "pull" && repos[repo] })
}

// grant keeps of scopes the actions allowed says yes to.
func grant(scopes []string, allowed func(repo, action string) bool) []Access {
	var out []Access
	for _, scope := range scopes {
		typ, rest, ok := strings.Cut(scope, ":")
		if !ok || typ != "repository" {
			continue
		}
		i := strings.LastIndex(rest, ":")
		if i < 0 {
			continue
		}
		name, actions := rest[:i], strings.Split(rest[i+1:], ",")
		var granted []string
		for _, a := range actions {
			if allowed(name, a) {
				granted = append(granted, a)
			}
		}
		if len(granted) > 0 {
			out = append(out, Access{Type: "repository", Name: name, Actions: granted})
		}
	}
	return out
}

func may(principal, repo, action string) bool {
	switch {
	case principal == Admin:
		return action == "pull" || action == "push" || action == "delete" || action == "*"
	case principal == Puller:
		return action == "pull"
	}
	project, ok := strings.CutPrefix(principal, "project-")
	if !ok {
		return false
	}
	if repo == project {
		return action == "pull" || action == "push"
	}
	// Platform base images, for builds that start from them.
	return strings.HasPrefix(repo, "base/") && action == "pull"
}

// Token issues a token for principal with access, for the registry.
func (s *Service) Token(principal string, access []Access) (token string, expiresIn time.Duration, err error) {
	now := s.now()
	var jti [12]byte
	_, _ = rand.Read(jti[:])
	claims := jwt.MapClaims{
		"iss":    s.Issuer,
		"sub":    principal,
		"aud":    s.Name,
		"iat":    now.Unix(),
		"nbf":    now.Add(-time.Minute).Unix(),
		"exp":    now.Add(s.TTL).Unix(),
		"jti":    base64.RawURLEncoding.EncodeToString(jti[:]),
		"access": access,
	}
	if access == nil {
		claims["access"] = []Access{}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	// The registry finds the verifying key by the JWK thumbprint of the
	// certificate in its rootcertbundle.
	t.Header["kid"] = Thumbprint(s.Key.Public().(ed25519.PublicKey))
	signed, err := t.SignedString(s.Key)
	return signed, s.TTL, err
}

// Thumbprint is the RFC 7638 thumbprint of an Ed25519 key, as the registry
// computes it.
func Thumbprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Certificate returns a self-signed certificate (PEM) of the signing key,
// for the registry's auth.token.rootcertbundle.
func (s *Service) Certificate() ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: s.Issuer + " registry token signer"},
		NotBefore:    s.now().Add(-time.Hour),
		NotAfter:     s.now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Key.Public(), s.Key)
	if err != nil {
		return nil, fmt.Errorf("token certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
