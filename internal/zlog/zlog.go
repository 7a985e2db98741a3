// Package zlog builds Zeitwork's one logger. Every role and component logs
// through a *slog.Logger made here: JSON in production so log shippers can
// parse it, text in development so people can read it, with the component's
// name attached and secrets redacted before they reach any output.
package zlog

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
)

// Format selects the handler: FormatJSON for production, FormatText for dev.
type Format string

const (
	FormatJSON Format = "json"
	FormatText Format = "text"
)

// UnmarshalText lets caarlos0/env reject an unknown format at start-up.
func (f *Format) UnmarshalText(b []byte) error {
	switch Format(strings.ToLower(string(b))) {
	case FormatJSON:
		*f = FormatJSON
	case FormatText:
		*f = FormatText
	default:
		return fmt.Errorf("unknown log format %q (want json or text)", b)
	}
	return nil
}

// Config is the logging part of every role's configuration.
type Config struct {
	Format Format     `env:"LOG_FORMAT" envDefault:"json"`
	Level  slog.Level `env:"LOG_LEVEL" envDefault:"info"`
}

// New returns the root logger writing to w.
func New(w io.Writer, cfg Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Level, ReplaceAttr: redact}
	var h slog.Handler
	if cfg.Format == FormatText {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h)
}

// Component returns a logger for one component of a role ("scheduler",
// "migrate", ...), so every line says where it came from.
func Component(l *slog.Logger, name string) *slog.Logger {
	return l.With(slog.String("component", name))
}

// Discard is a logger that drops everything, for tests that do not read logs.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Secret wraps a value that must never appear in a log line. It can be
// passed to slog as-is; it renders as [redacted].
type Secret string

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// String keeps fmt from printing the secret by accident.
func (Secret) String() string { return redacted }

// Reveal returns the secret itself, for the one place that must use it.
func (s Secret) Reveal() string { return string(s) }

const redacted = "[redacted]"

// sensitiveKeys are attribute keys whose values are redacted whatever their
// type: a second line of defence for secrets that were not wrapped in Secret.
var sensitiveKeys = []string{"password", "secret", "token", "authorization", "cookie", "private_key", "api_key"}

func redact(_ []string, a slog.Attr) slog.Attr {
	key := strings.ToLower(a.Key)
	for _, s := range sensitiveKeys {
		if strings.Contains(key, s) {
			return slog.String(a.Key, redacted)
		}
	}
	return a
}

// RedactURL returns rawURL with any password replaced, for logging where a
// service lives (a DATABASE_URL, say) without logging how to get into it.
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		// An unparseable URL may still hold a secret: say nothing of it.
		return redacted
	}
	return u.Redacted()
}
