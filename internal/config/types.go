package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"

	"github.com/zeitwork/zeitwork/internal/zlog"
)

// PostgresURL is a connection URL checked at start-up: a typo in
// DATABASE_URL should stop the role at once, not on its first query.
type PostgresURL string

// UnmarshalText implements encoding.TextUnmarshaler for caarlos0/env.
func (p *PostgresURL) UnmarshalText(b []byte) error {
	u, err := url.Parse(string(b))
	if err != nil {
		// url's error quotes the whole URL, password included.
		return fmt.Errorf("not a URL")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("scheme %q is not postgres:// or postgresql://", u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("no host in URL %s", u.Redacted())
	}
	*p = PostgresURL(b)
	return nil
}

// LogValue keeps the password out of logs.
func (p PostgresURL) LogValue() slog.Value { return slog.StringValue(zlog.RedactURL(string(p))) }

// String keeps the password out of fmt output too.
func (p PostgresURL) String() string { return zlog.RedactURL(string(p)) }

// Reveal returns the URL with its password, for connecting.
func (p PostgresURL) Reveal() string { return string(p) }

// Secret is a configuration value that must not be logged.
type Secret = zlog.Secret

// SigningKey is an Ed25519 private key, given as its base64-encoded
// 32-byte seed. The zero value is unset.
type SigningKey struct{ key ed25519.PrivateKey }

// UnmarshalText implements encoding.TextUnmarshaler for caarlos0/env.
// The error never quotes the value.
func (k *SigningKey) UnmarshalText(b []byte) error {
	seed, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil || len(seed) != ed25519.SeedSize {
		return errors.New("must be a base64 32-byte Ed25519 seed")
	}
	k.key = ed25519.NewKeyFromSeed(seed)
	return nil
}

// Set says whether a key was given.
func (k SigningKey) Set() bool { return k.key != nil }

// Key returns the private key (nil when unset).
func (k SigningKey) Key() ed25519.PrivateKey { return k.key }

// String keeps the key out of fmt output.
func (k SigningKey) String() string {
	if k.key == nil {
		return ""
	}
	return "[redacted]"
}

// LogValue keeps the key out of logs.
func (k SigningKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// Name is a name for things on the host (network namespaces, containerd
// namespaces, directories): lower-case letters and digits in groups joined
// by single dashes, so that "<name>-node1" is valid everywhere it is used.
type Name string

var nameRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// UnmarshalText implements encoding.TextUnmarshaler for caarlos0/env.
func (n *Name) UnmarshalText(b []byte) error {
	if len(b) > 32 || !nameRE.Match(b) {
		return fmt.Errorf("%q is not a name: up to 32 lower-case letters and digits, in groups joined by single dashes", b)
	}
	*n = Name(b)
	return nil
}
