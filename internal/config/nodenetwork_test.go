package config

import (
	"net/netip"
	"strings"
	"testing"
)

// TestNodeNetworkSettings: NETWORK_BLOCKED takes a list of prefixes (the
// nodes' own addresses), the connection cap has a default and refuses
// nonsense, each error naming its variable.
func TestNodeNetworkSettings(t *testing.T) {
	base := func() map[string]string {
		return map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p", "NODE_INTERNAL_ADDRESS": "10.0.0.1:8090"}
	}
	cfg, err := ParseFrom[NodeAgent](base())
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Egress.Blocked) != 0 || cfg.MaxConnsPerInstance != 4096 || cfg.APIAddr != "" || cfg.ProxyAddr != "" {
		t.Fatalf("defaults: blocked %v, max conns %d, api %q, proxy %q", cfg.Egress.Blocked, cfg.MaxConnsPerInstance, cfg.APIAddr, cfg.ProxyAddr)
	}
	env := base()
	env["NETWORK_BLOCKED"] = "203.0.113.7/32,2001:db8:1::/48"
	env["NODE_INSTANCE_MAX_CONNECTIONS"] = "0"
	if cfg, err = ParseFrom[NodeAgent](env); err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("2001:db8:1::/48")}
	if len(cfg.Egress.Blocked) != 2 || cfg.Egress.Blocked[0] != want[0] || cfg.Egress.Blocked[1] != want[1] || cfg.MaxConnsPerInstance != 0 {
		t.Fatalf("blocked %v, max conns %d", cfg.Egress.Blocked, cfg.MaxConnsPerInstance)
	}
	for name, value := range map[string]string{"NETWORK_BLOCKED": "203.0.113.7", "NODE_INSTANCE_MAX_CONNECTIONS": "-1"} {
		env := base()
		env[name] = value
		if _, err := ParseFrom[NodeAgent](env); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: %v, want an error naming it", name, value, err)
		}
	}
}
