package config

import (
	"fmt"
	"log/slog"
	"net/url"

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
