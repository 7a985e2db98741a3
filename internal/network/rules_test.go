package network

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func testAttachments() []Attachment {
	// Out of order on purpose: the rendering sorts.
	return []Attachment{
		{
			ID: uuid.MustParse("0190a4d2-7b3c-7def-8123-0000000000b2"), HostIf: "zwh000000b2", Port: 3000,
			Addr:  netip.MustParseAddr("fd7a:7765:7400:1:aaaa::b2"),
			Addr4: netip.MustParseAddr("198.18.7.2"),
		},
		{
			ID: uuid.MustParse("0190a4d2-7b3c-7def-8123-0000000000a1"), HostIf: "zwh000000a1", Port: 8080,
			Addr:  netip.MustParseAddr("fd7a:7765:7400:1:bbbb::a1"),
			Addr4: netip.MustParseAddr("198.18.9.1"),
		},
	}
}

func TestRenderRules(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Uplink = "eth0"
	cfg.Blocked = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("10.1.0.0/16")}
	got := renderRules(cfg, testAttachments())

	golden := filepath.Join("testdata", "rules.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestRenderRules -update)", err)
	}
	if got != string(want) {
		t.Errorf("rendered rules differ from %s (go test -run TestRenderRules -update, then review the diff):\n%s", golden, got)
	}

	// The golden file can be regenerated carelessly; these are the rules
	// the isolation rests on, checked by meaning.
	for _, rule := range []string{
		"delete table inet zeitwork",
		`elements = { "zwh000000a1" . fd7a:7765:7400:1:bbbb::a1, "zwh000000b2" . fd7a:7765:7400:1:aaaa::b2 }`,
		`elements = { "zwh000000a1" . 198.18.9.1, "zwh000000b2" . 198.18.7.2 }`,
		`elements = { "zwh000000a1" . 8080, "zwh000000b2" . 3000 }`,
		// The cluster and private ranges are blocked; 10.1/16 merged into 10/8.
		"fc00::/7", "fe80::/10", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "198.18.0.0/15", "203.0.113.0/24",
		"type filter hook prerouting priority raw; policy accept;",
		`iifname "zwh*" jump instance_source`,
		"iifname . ip6 saddr @inst_addr6 return",
		"iifname . ip saddr @inst_addr4 return",
		`iifname "zwh*" jump instance_egress`,
		`oifname "zwh*" jump instance_ingress`,
		"ip6 daddr @blocked6 counter goto refuse",
		"ip daddr @blocked4 counter goto refuse",
		// NAT64 and cloud metadata, whatever the configuration.
		"64:ff9b::/96", "168.63.129.16",
		// Refusals are TCP resets where they can be.
		"meta l4proto tcp reject with tcp reset",
		"type filter hook forward priority filter; policy drop;",
		`oifname "eth0" accept`,
		`iifname "zwh*" jump instance_to_node`,
		`oifname "zwh*" jump node_to_instance`,
		"oifname . tcp dport @inst_port accept",
		`oifname "eth0" ip6 saddr fd7a:7765:7400::/48 masquerade`,
		`oifname "eth0" ip saddr 198.18.0.0/15 masquerade`,
	} {
		if !strings.Contains(got, rule) {
			t.Errorf("rules lack %q", rule)
		}
	}
	if strings.Contains(got, "10.1.0.0/16") {
		t.Error("10.1.0.0/16 was not merged into 10.0.0.0/8 (nft rejects overlapping intervals)")
	}
	// Every chain that judges instance traffic ends in a refusal.
	for _, chain := range []string{"instance_source", "instance_egress", "instance_ingress", "instance_to_node", "node_to_instance"} {
		body := chainBody(t, got, chain)
		last := body[len(body)-1]
		if !strings.HasSuffix(last, " drop") && !strings.HasSuffix(last, "goto refuse") {
			t.Errorf("chain %s ends with %q, not a refusal", chain, last)
		}
	}
	if body := chainBody(t, got, "refuse"); body[len(body)-1] != "reject with icmpx admin-prohibited" {
		t.Errorf("chain refuse ends with %q, not a refusal of everything", body[len(body)-1])
	}
	// Base chains other than forward accept by default: they must only
	// ever jump for our links. Forward drops what is not an instance's.
	for _, chain := range []string{"prerouting", "forward", "input", "output"} {
		for _, line := range chainBody(t, got, chain)[1:] {
			if !strings.Contains(line, `"zwh*" jump `) {
				t.Errorf("base chain %s has a rule not confined to instance links: %q", chain, line)
			}
		}
	}

	reversed := testAttachments()
	slices.Reverse(reversed)
	if again := renderRules(cfg, reversed); again != got {
		t.Error("rendering depends on the order of attachments")
	}
}

func TestRenderRulesConnectionLimit(t *testing.T) {
	cfg := DefaultConfig()
	if got := renderRules(cfg, nil); strings.Contains(got, "inst_conns") {
		t.Error("rules without a connection limit count connections")
	}
	cfg.MaxConnsPerInstance = 100
	body := chainBody(t, renderRules(cfg, nil), "node_to_instance")
	limit := slices.Index(body, "oifname . tcp dport @inst_port add @inst_conns { oifname ct count over 100 } counter goto refuse")
	if accept := slices.Index(body, "oifname . tcp dport @inst_port accept"); limit < 0 || limit > accept {
		t.Errorf("node_to_instance does not cap connections before accepting them:\n%s", strings.Join(body, "\n"))
	}
}

func TestRenderRulesWithoutEgress(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IPv4 = netip.Prefix{}
	got := renderRules(cfg, nil)
	for _, absent := range []string{"masquerade", "oifname \"\"", "elements = {  }"} {
		if strings.Contains(got, absent) {
			t.Errorf("rules without uplink contain %q", absent)
		}
	}
	for _, line := range chainBody(t, got, "instance_egress")[1:] {
		if !strings.Contains(line, "refuse") {
			t.Errorf("without an uplink, egress must only reject new connections: %q", line)
		}
	}
}

func TestElementScript(t *testing.T) {
	a := testAttachments()
	newer := a[0]
	newer.Port = 4000
	got := elementScript("zt", []Attachment{newer}, []Attachment{a[0]})
	want := `add element inet zt inst_addr6 { "zwh000000b2" . fd7a:7765:7400:1:aaaa::b2 }
delete element inet zt inst_addr6 { "zwh000000b2" . fd7a:7765:7400:1:aaaa::b2 }
add element inet zt inst_addr4 { "zwh000000b2" . 198.18.7.2 }
delete element inet zt inst_addr4 { "zwh000000b2" . 198.18.7.2 }
add element inet zt inst_port { "zwh000000b2" . 3000 }
delete element inet zt inst_port { "zwh000000b2" . 3000 }
add element inet zt inst_addr6 { "zwh000000b2" . fd7a:7765:7400:1:aaaa::b2 }
add element inet zt inst_addr4 { "zwh000000b2" . 198.18.7.2 }
add element inet zt inst_port { "zwh000000b2" . 4000 }
`
	if got != want {
		t.Errorf("elementScript:\n%s\nwant:\n%s", got, want)
	}
}

func TestMergePrefixes(t *testing.T) {
	var in []netip.Prefix
	for _, s := range []string{"10.1.0.0/16", "fc00::/7", "10.0.0.0/8", "fd7a:7765:7400::/48", "192.168.1.0/24", "10.0.0.0/8", "1.2.3.4/32"} {
		in = append(in, netip.MustParsePrefix(s))
	}
	var got []string
	for _, p := range mergePrefixes(in) {
		got = append(got, p.String())
	}
	want := []string{"1.2.3.4/32", "10.0.0.0/8", "192.168.1.0/24", "fc00::/7"}
	if !slices.Equal(got, want) {
		t.Errorf("mergePrefixes = %v, want %v", got, want)
	}
}

// chainBody returns the trimmed lines of a chain in rendered rules.
func chainBody(t *testing.T, rules, chain string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(rules, "\tchain "+chain+" {\n")
	if !ok {
		t.Fatalf("no chain %s", chain)
	}
	body, _, _ := strings.Cut(rest, "\n\t}")
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}
