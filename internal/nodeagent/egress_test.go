package nodeagent

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/network"
)

func TestEgressSettings(t *testing.T) {
	self := id.New()
	log := slog.New(slog.DiscardHandler)

	// A real node: its named uplink, the public resolvers.
	real := network.DefaultConfig()
	egress(&real, config.NodeAgent{Egress: config.Egress{Mode: config.EgressNAT, Uplink: "eth0"}}, self, log)
	if real.Uplink != "eth0" || real.Machine != nil || len(real.Resolvers) != len(network.DefaultConfig().Resolvers) {
		t.Errorf("real node: uplink %q, machine %+v, resolvers %v", real.Uplink, real.Machine, real.Resolvers)
	}

	// A simulated node: an uplink of its own to the machine, named for the
	// node; the machine's resolvers unless some are configured.
	sim := network.DefaultConfig()
	sim.Table, sim.LinkPrefix, sim.NetnsPrefix = SimulatedNames(self)
	want := []netip.Addr{netip.MustParseAddr("192.0.2.53")}
	egress(&sim, config.NodeAgent{NodeNetns: "/run/netns/x", Egress: config.Egress{Mode: config.EgressNAT, Resolvers: want}}, self, log)
	link, glob := SimulatedUplink(self)
	if sim.Uplink == "" || sim.Machine == nil || sim.Machine.Link != link || sim.Machine.LinkGlob != glob ||
		sim.Machine.Net != network.MachineUplinkNet(self) || sim.Machine.Table != "x" {
		t.Fatalf("simulated node: uplink %q, machine %+v", sim.Uplink, sim.Machine)
	}
	if len(sim.Resolvers) != 1 || sim.Resolvers[0] != want[0] {
		t.Errorf("simulated node resolvers %v, want the configured %v", sim.Resolvers, want)
	}
	sim.NodeNetns = "/run/netns/x"
	if _, err := network.New(sim); err != nil && !isMissingNetns(err) {
		t.Errorf("the simulated node's network configuration is refused: %v", err)
	}
}

// isMissingNetns: New got past validation and failed only to open the
// namespace, which this test does not make.
func isMissingNetns(err error) bool {
	return err != nil && strings.Contains(err.Error(), "node namespace")
}
