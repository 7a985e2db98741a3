package nodeagent

import (
	"context"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/runtime"
)

// The node's network on every pass, beside the instances: the firewall is
// re-checked (it fails closed only if something puts it back), and
// instance networks nobody wants any more are removed.

// checkFirewall re-applies the node's nftables policy if it is missing or
// was changed: a firewall reload (`nft flush ruleset`) removes it while
// forwarding stays on, and until it is back instances are not isolated.
func (c *Converger) checkFirewall(ctx context.Context) {
	if c.Network == nil || c.Policy.HostNetwork {
		return
	}
	repaired, err := c.Network.Check(ctx)
	switch {
	case err != nil:
		// Check has turned forwarding off: instances have no egress until a
		// later pass applies the policy.
		c.Log.ErrorContext(ctx, "firewall cannot be checked or applied", "err", err)
	case repaired:
		c.Log.WarnContext(ctx, "firewall was missing or changed; applied it again")
	}
}

// sweepNetworks tears down the networks of instances that no longer need
// one: not assigned here, stopped or failed, and with no container left.
// They are what a create that failed after Setup leaves (the image would
// not run, the runtime refused the spec), and what an agent that died
// between Setup and Create, or during a stop, leaves behind; nothing else
// ever removes them. Called at the end of a pass; a network whose
// instance has a step under way (a create between Setup and the
// container) is left alone.
func (c *Converger) sweepNetworks(ctx context.Context, want []instance.Assignment, have []runtime.Status) {
	if c.Network == nil || c.Policy.HostNetwork {
		return
	}
	atts, err := c.Network.List()
	if err != nil {
		c.Log.WarnContext(ctx, "list instance networks", "err", err)
		return
	}
	keep := make(map[uuid.UUID]bool, len(want)+len(have))
	for _, a := range want {
		if a.Desired == instance.DesiredRunning && a.State != instance.StateFailed {
			keep[a.ID] = true
		}
	}
	for _, s := range have {
		// A container still there (a stop that failed) keeps its network
		// until it is gone: its processes would otherwise lose it mid-run.
		if s.State != runtime.StateMissing {
			keep[s.InstanceID] = true
		}
	}
	for _, att := range atts {
		// A create under way may have set up its network and not yet made
		// its container.
		if keep[att.ID] || c.Busy(att.ID) {
			continue
		}
		c.Log.InfoContext(ctx, "removing the network of an instance that does not run here", "instance_id", att.ID, "netns", att.Netns)
		if err := c.Network.Teardown(ctx, att.ID); err != nil {
			c.Log.WarnContext(ctx, "remove stale instance network", "instance_id", att.ID, "err", err)
		}
	}
}
