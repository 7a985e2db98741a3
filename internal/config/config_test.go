package config

import (
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/zlog"
)

func TestMissingRequiredVariableIsNamed(t *testing.T) {
	_, err := ParseFrom[Migrate](map[string]string{})
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if !slices.Equal(cerr.Vars(), []string{"DATABASE_URL"}) {
		t.Fatalf("vars = %v, want [DATABASE_URL]", cerr.Vars())
	}
	if !strings.Contains(err.Error(), "DATABASE_URL: required but not set") {
		t.Fatalf("message = %q", err)
	}
}

func TestMalformedVariablesAreNamed(t *testing.T) {
	_, err := ParseFrom[Operator](map[string]string{
		"DATABASE_URL":       "mysql://root@db/zeitwork",
		"DATABASE_MAX_CONNS": "lots",
		"LOG_LEVEL":          "shouty",
		"QUEUE_RESCUE_AFTER": "soon",
		"CLUSTER_TOKEN":      "t",
	})
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v, want *Error", err)
	}
	want := []string{"DATABASE_MAX_CONNS", "DATABASE_URL", "LOG_LEVEL", "QUEUE_RESCUE_AFTER"}
	if !slices.Equal(cerr.Vars(), want) {
		t.Fatalf("vars = %v, want %v (%v)", cerr.Vars(), want, err)
	}
	if !strings.Contains(err.Error(), `scheme "mysql" is not postgres://`) {
		t.Fatalf("message does not say why DATABASE_URL is wrong: %q", err)
	}
}

func TestURLPasswordNeverInErrors(t *testing.T) {
	_, err := ParseFrom[Migrate](map[string]string{"DATABASE_URL": "postgres://u:hunter2@/db"})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v: want an error without the password", err)
	}
}

func TestDefaultsAndValues(t *testing.T) {
	cfg, err := ParseFrom[Operator](map[string]string{
		"DATABASE_URL":  "postgres://zeitwork:pw@127.0.0.1:5432/zeitwork",
		"LOG_FORMAT":    "text",
		"CLUSTER_TOKEN": "t",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database.MaxConns != 10 || cfg.Queue.RescueAfter != 15*time.Minute || cfg.Addr != ":8081" {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	if cfg.Log.Format != zlog.FormatText || cfg.Log.Level != slog.LevelInfo {
		t.Fatalf("log config = %+v", cfg.Log)
	}
	if cfg.Database.URL.Reveal() != "postgres://zeitwork:pw@127.0.0.1:5432/zeitwork" {
		t.Fatalf("url = %q", cfg.Database.URL.Reveal())
	}
	if strings.Contains(cfg.Database.URL.String(), "pw@") {
		t.Fatalf("String() shows the password: %s", cfg.Database.URL)
	}
}

func TestDevNeedsNoVariables(t *testing.T) {
	cfg, err := ParseFrom[Dev](map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RegistryAddr != "127.0.0.1:25000" || cfg.LogFormat != zlog.FormatText {
		t.Fatalf("dev defaults = %+v", cfg)
	}
}

func TestEdgeTLSIsOnUnlessTurnedOff(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t"}
	for _, tc := range []struct {
		vars map[string]string
		tls  bool
	}{
		{map[string]string{}, true},
		{map[string]string{"EDGE_HTTPS_ADDR": ""}, true}, // empty is unset: the default applies
		{map[string]string{"EDGE_HTTPS_ADDR": "off"}, false},
		{map[string]string{"EDGE_CLOUDFLARE_FRONTED": "true"}, false},
	} {
		vars := maps.Clone(base)
		maps.Copy(vars, tc.vars)
		cfg, err := ParseFrom[Edge](vars)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.TLS() != tc.tls {
			t.Errorf("%v: TLS() = %v", tc.vars, cfg.TLS())
		}
	}
	cfg, _ := ParseFrom[Edge](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "EDGE_METRICS_ADDR": "off", "EDGE_TRUSTED_PROXIES": "10.0.0.0/8,fd00::/64"})
	if !Off(cfg.MetricsAddr) || len(cfg.TrustedProxies) != 2 || !cfg.TrustedProxies[1].Addr().Is6() {
		t.Fatalf("metrics %q, trusted %v", cfg.MetricsAddr, cfg.TrustedProxies)
	}
	if _, err := ParseFrom[Edge](map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "EDGE_TRUSTED_PROXIES": "cloudflare"}); err == nil || !strings.Contains(err.Error(), "EDGE_TRUSTED_PROXIES") {
		t.Fatalf("bad trusted proxies: %v", err)
	}
}
