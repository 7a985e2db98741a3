package nodeagent

import (
	"net/netip"
	"testing"

	"github.com/zeitwork/zeitwork/internal/config"
)

// TestListenAddrsArePrivateByDefault: with only NODE_INTERNAL_ADDRESS set,
// the node API and the node-proxy listen on that private address, not on
// every interface (the defaults were :8082 and :8090); explicit settings
// win, and an internal address that is no address is refused.
func TestListenAddrsArePrivateByDefault(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://u:p@h/d", "CLUSTER_TOKEN": "t", "NODE_PROXY_TOKEN": "p"}
	parse := func(extra map[string]string) config.NodeAgent {
		t.Helper()
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range extra {
			env[k] = v
		}
		cfg, err := config.ParseFrom[config.NodeAgent](env)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	for _, c := range []struct {
		env        map[string]string
		api, proxy string
	}{
		{map[string]string{"NODE_INTERNAL_ADDRESS": "100.64.0.7:8090"}, "100.64.0.7:8082", "100.64.0.7:8090"},
		{map[string]string{"NODE_INTERNAL_ADDRESS": "[fd7a:115c:a1e0::7]:9000"}, "[fd7a:115c:a1e0::7]:8082", "[fd7a:115c:a1e0::7]:9000"},
		{map[string]string{"NODE_INTERNAL_ADDRESS": "10.0.0.7:8090", "NODEAGENT_ADDR": "127.0.0.1:0", "NODEPROXY_ADDR": "10.0.0.7:1234"}, "127.0.0.1:0", "10.0.0.7:1234"},
	} {
		api, proxy, err := ListenAddrs(parse(c.env))
		if err != nil || api != c.api || proxy != c.proxy {
			t.Errorf("%v: api %q, proxy %q, %v; want %q, %q", c.env, api, proxy, err, c.api, c.proxy)
		}
		for _, a := range []string{api, proxy} {
			if ap, err := netip.ParseAddrPort(a); err != nil || ap.Addr().IsUnspecified() {
				t.Errorf("%v: listens on %q, not one private address", c.env, a)
			}
		}
	}
	for _, bad := range []string{":8090", "0.0.0.0:8090", "[::]:8090", "10.0.0.7"} {
		if api, proxy, err := ListenAddrs(parse(map[string]string{"NODE_INTERNAL_ADDRESS": bad})); err == nil {
			t.Errorf("NODE_INTERNAL_ADDRESS %q: listens on %q and %q, want an error", bad, api, proxy)
		}
	}
}
