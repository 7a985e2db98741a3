// define declares the stack's resources from a checked configuration:
// the tailnet policy first (the auth keys' tags must be owned before a key
// may carry them), one reusable auth key per set of tags, the servers when
// asked, and the DNS records on the edges' and api nodes' addresses.
import * as cloudflare from "@pulumi/cloudflare";
import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import * as tailscale from "@pulumi/tailscale";
import { policy } from "./acl";
import { userData } from "./cloudinit";
import { nodesBlock } from "./cluster";
import { defaultImage, InfraConfig, NodeSpec, tagsOf } from "./config";
import { Host, records } from "./dns";

export interface Outputs {
  policy: string;
  authKeys: pulumi.Output<Record<string, string>>;
  servers: pulumi.Output<Record<string, { ipv4: string; ipv6?: string }>>;
  records: pulumi.Output<{ name: string; type: string; content: string; proxied: boolean }[]>;
  clusterNodes: pulumi.Output<string>;
  // resources are what was declared, for the unit tests; index.ts exports
  // only the outputs above.
  resources: {
    acl: tailscale.Acl;
    keys: Map<string, tailscale.TailnetKey>;
    servers: Map<string, hcloud.Server>;
    firewalls: hcloud.Firewall[];
    records: cloudflare.DnsRecord[];
  };
}

export function define(cfg: InfraConfig): Outputs {
  const pol = JSON.stringify(policy(cfg), null, 2);
  const acl = new tailscale.Acl("tailnet-policy", { acl: pol, overwriteExistingContent: true });

  // One key per set of tags: nodes with the same roles share it, and
  // a node joins with exactly its roles' tags, so the ACL applies to it.
  const expiry = (cfg.tailscale.keyExpiryDays ?? 90) * 24 * 3600;
  const keys = new Map<string, tailscale.TailnetKey>();
  for (const n of cfg.nodes) {
    const tags = tagsOf(n);
    const id = keyId(n);
    if (keys.has(id)) continue;
    keys.set(
      id,
      new tailscale.TailnetKey(
        `authkey-${id}`,
        {
          reusable: true, // every machine of these roles, and a reinstalled one, joins with it
          ephemeral: false, // a node that is offline for a while keeps its address and name
          preauthorized: true,
          tags,
          expiry,
          recreateIfInvalid: "always",
          description: `zeitwork ${id}`,
        },
        { dependsOn: [acl] },
      ),
    );
  }
  const keyOf = (n: NodeSpec) => keys.get(keyId(n))!;

  const hosts = new Map<string, Host>();
  const servers = new Map<string, hcloud.Server>();
  const firewalls: hcloud.Firewall[] = [];
  const s = cfg.servers;
  if (s.create) {
    firewalls.push(...publicFirewalls(s.sshSources ?? anywhere));
    const sshKey = new hcloud.SshKey("zeitwork", { name: "zeitwork", publicKey: s.sshPublicKey! });
    for (const n of cfg.nodes) {
      const server = new hcloud.Server(n.name, {
        name: n.name,
        image: s.image ?? defaultImage,
        serverType: n.serverType ?? s.serverType ?? "cx32",
        location: n.location ?? s.location ?? "fsn1",
        sshKeys: [sshKey.id],
        publicNets: [{ ipv4Enabled: true, ipv6Enabled: true }],
        labels: {
          zeitwork: "node",
          ...Object.fromEntries([...(n.roles ?? []), ...(n.services ?? [])].map((r) => [`zeitwork-${r}`, "true"])),
        },
        userData: pulumi.secret(keyOf(n).key.apply((k) => userData(n, k))),
      }, {
        // cloud-init runs at first boot only, and a key renewed when it
        // expires (recreateIfInvalid) would otherwise replace every server.
        ignoreChanges: ["userData"],
      });
      servers.set(n.name, server);
      hosts.set(n.name, { name: n.name, ipv4: server.ipv4Address, ipv6: server.ipv6Address });
    }
  } else {
    for (const n of cfg.nodes) hosts.set(n.name, { name: n.name, ipv4: n.address!, ipv6: n.ipv6 });
  }

  const withRole = (r: "edge" | "api") => cfg.nodes.filter((n) => n.roles?.includes(r)).map((n) => hosts.get(n.name)!);
  const specs = records(cfg, withRole("edge"), withRole("api"));
  const dns = specs.map(
    (r) =>
      new cloudflare.DnsRecord(r.key, {
      zoneId: cfg.cloudflare.zoneIds[r.zone],
      name: r.name,
      type: r.type,
      content: r.content,
      proxied: r.proxied,
      ttl: r.proxied ? 1 : (cfg.cloudflare.ttl ?? 300), // 1: automatic, the only TTL of a proxied record
      comment: "managed by deploy/pulumi",
    }),
  );

  const os = s.create ? ((s.image ?? defaultImage).startsWith("ubuntu") ? "ubuntu" : "debian") : undefined;
  const ipv4s = pulumi.all(cfg.nodes.map((n) => hosts.get(n.name)!.ipv4));
  return {
    policy: pol,
    authKeys: pulumi.secret(pulumi.all(Object.fromEntries([...keys].map(([id, k]) => [id, k.key])))),
    servers: pulumi.output(Object.fromEntries([...hosts].map(([name, h]) => [name, { ipv4: h.ipv4, ipv6: h.ipv6 }]))),
    records: pulumi.output(specs.map((r) => ({ name: r.name, type: r.type, content: r.content, proxied: r.proxied }))),
    clusterNodes: ipv4s.apply((addrs) =>
      nodesBlock(
        cfg.tailscale.tailnet,
        cfg.nodes.map((spec, i) => ({ spec, address: addrs[i], os })),
      ),
    ),
    resources: { acl, keys, servers, firewalls, records: dns },
  };
}

const anywhere = ["0.0.0.0/0", "::/0"];

// publicFirewalls are what the internet may reach: SSH (bootstrap) and
// Tailscale's direct connections on every server, HTTP(S) on the edges and
// the api nodes (kamal-proxy). Everything between nodes (8081, 8082, 8090,
// 5432) goes over the tailnet, which these do not filter: its ACL does.
function publicFirewalls(sshSources: string[]): hcloud.Firewall[] {
  const tcp = (port: string, sourceIps: string[], description: string) => ({ direction: "in", protocol: "tcp", port, sourceIps, description });
  return [
    new hcloud.Firewall("zeitwork-nodes", {
      name: "zeitwork-nodes",
      applyTos: [{ labelSelector: "zeitwork=node" }],
      rules: [
        tcp("22", sshSources, "SSH: zeitwork bootstrap"),
        { direction: "in", protocol: "udp", port: "41641", sourceIps: anywhere, description: "Tailscale direct connections" },
        { direction: "in", protocol: "icmp", sourceIps: anywhere, description: "ICMP (path MTU discovery)" },
      ],
    }),
    new hcloud.Firewall("zeitwork-web", {
      name: "zeitwork-web",
      applyTos: [{ labelSelector: "zeitwork-edge" }, { labelSelector: "zeitwork-api" }],
      rules: [tcp("80", anywhere, "HTTP: ACME and redirects"), tcp("443", anywhere, "HTTPS")],
    }),
  ];
}

// keyId names the auth key of a node's set of roles and services.
function keyId(n: NodeSpec): string {
  return tagsOf(n).map((t) => t.replace("tag:zw-", "")).join("-");
}
