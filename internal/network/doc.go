// Package network owns the network of a node's instances: each instance's
// named network namespace, the veth pair that joins it to the node, its
// addresses and routes, and the node's nftables policy that isolates
// instances. It is node-local kernel plumbing only: which address an
// instance gets is the cluster's address plan, in internal/ipam, which the
// control plane uses without importing any of this.
//
// # Files
//
//   - manager.go: the Manager, its configuration of the node (Apply:
//     forwarding, the whole nftables table; Check: the same again
//     whenever the table is not as the manager left it).
//   - setup.go: Setup, which converges one instance's network: claim the
//     veth name and address, the namespace, the veth pair, both sides'
//     addresses and routes, the set elements.
//   - teardown.go: Teardown of one instance, Reset of everything.
//   - concurrency.go: how Setups and Teardowns run side by side (a lock
//     per veth, address claims, set elements written in batches).
//   - state.go: reading the attachments back from the kernel (List, the
//     veth alias, the instance routes).
//   - link.go: small idempotent netlink steps (up, addresses, routes).
//   - netns.go: creating, pinning and entering namespaces; sysctls.
//   - rules.go and rules.nft.tmpl: the nftables policy.
//   - machine.go and machine.nft.tmpl: a simulated node's uplink to the
//     machine it runs on, and the machine's table for it.
//   - names.go: interface names and the veth gateways; config.go: Config.
//   - dial.go: dialing from inside a namespace.
//
// # Shape
//
// An instance's namespace (/run/netns/zw-<instance id>) holds lo and eth0.
// eth0 has the instance's IPv6 address as a /128 (from the node's /64) and,
// when IPv4 egress is on, a node-local IPv4 /32; its default routes point at
// link-local gateways (fe80::1, 169.254.1.1) that sit on the host side of
// the veth (zwh<last 8 hex digits of the id>). The node routes each /128 and
// /32 to its veth. No bridge: each instance is a point-to-point link, so
// instances share no layer 2 and cannot see each other's frames, and the
// node's routing and nftables see every packet.
//
// # Policy
//
// Default deny (rules.nft.tmpl has the whole table): an instance sends only
// from its own addresses; it may open connections to the internet through
// the uplink (masqueraded to the node's address) and nothing else: not
// another instance on this node or any other (the whole cluster prefix), not
// the node itself, not private, link-local or special-purpose ranges. The
// node may open connections to an instance's port and nothing else; replies
// flow back by conntrack.
//
// DNS: an instance cannot use a resolver on the node (a node service), and
// private ranges are blocked, so it gets a resolv.conf naming
// Config.Resolvers, which the policy lets it reach on port 53 and nothing
// else, wherever they are. Enabling forwarding (Apply) would make the node
// route between all its interfaces; the forward chain's policy is drop, so
// it forwards its instances' traffic and nothing else.
//
// Refusals are TCP resets where the protocol is TCP, so that connect()
// fails at once with ECONNREFUSED, and ICMP administratively prohibited
// otherwise. The node may hold at most Config.MaxConnsPerInstance
// connections to one instance.
//
// # Failing closed
//
// `nft flush ruleset` (a firewall reload) removes the table while
// forwarding stays on. Check, which the agent runs on every convergence
// pass, lists the table and applies it whole again unless it is exactly
// what the manager last wrote; if it cannot, it turns forwarding off, so
// that instances lose egress rather than isolation.
//
// # Why netlink, and nft as a file
//
// Links, addresses and routes are made through netlink
// (github.com/vishvananda/netlink) rather than by running ip(8): errors come
// back as errno values rather than text to parse, state is read back typed
// for the idempotence checks, a handle opened at a namespace works inside it
// without switching threads, and a node setting up 50 instances does not
// fork a few hundred processes. The nftables policy is the exception (see
// rules.go): there, nft's own file format is the clearer and atomic tool.
//
// # State lives in the kernel
//
// Nothing is stored on disk: the namespaces are pinned in /run/netns, the
// host veth's alias records the instance id and port, and its routes record
// the addresses. List reads them back, so a restarted agent adopts what is
// there (Setup on a correct attachment changes nothing) and tears down what
// it no longer wants. Every object is named with a configured prefix, so
// Reset removes exactly this package's objects and nothing of the host's.
package network
