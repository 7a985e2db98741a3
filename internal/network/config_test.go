package network

import (
	"net/netip"
	"testing"

	"github.com/google/uuid"
)

func TestShortID(t *testing.T) {
	i := uuid.MustParse("0190a4d2-7b3c-7def-8123-456789abcdef")
	if got := shortID(i); got != "89abcdef" {
		t.Errorf("shortID = %q", got)
	}
	cfg := DefaultConfig()
	m := &Manager{cfg: cfg}
	if name := m.hostIf(i); name != "zwh89abcdef" || len(name) > 15 {
		t.Errorf("host interface %q", name)
	}
	if p := m.NetnsPath(i); p != "/run/netns/zw-0190a4d2-7b3c-7def-8123-456789abcdef" {
		t.Errorf("netns path %q", p)
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Uplink = "eth0"
	if err := good.validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"uplink with our prefix": func(c *Config) { c.Uplink = "zwh0" },
		"uplink injection":       func(c *Config) { c.Uplink = `eth0" accept` },
		"long link prefix":       func(c *Config) { c.LinkPrefix = "zeitwork" },
		"ipv4 has gateway":       func(c *Config) { c.IPv4 = netip.MustParsePrefix("169.254.0.0/16") },
		"ipv4 too small":         func(c *Config) { c.IPv4 = netip.MustParsePrefix("198.18.0.0/30") },
		"ipv4 is v6":             func(c *Config) { c.IPv4 = netip.MustParsePrefix("fd00::/64") },
		"cluster too small":      func(c *Config) { c.Cluster = netip.MustParsePrefix("fd7a:7765:7400:1::/64") },
		"table name":             func(c *Config) { c.Table = "zw; flush ruleset" },
		"relative netns dir":     func(c *Config) { c.NetnsDir = "run/netns" },
	} {
		c := good
		mutate(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: validate() = nil", name)
		}
	}
	off := good
	off.IPv4 = netip.Prefix{}
	off.Uplink = ""
	if err := off.validate(); err != nil {
		t.Errorf("no IPv4 and no uplink is a valid config: %v", err)
	}
}
