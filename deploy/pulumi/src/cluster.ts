// The nodes block of cluster.yaml, from what this stack knows: where SSH
// reaches each machine (its public IPv4) and how the others reach it (its
// MagicDNS name on the tailnet), so node-to-node traffic (node API,
// node-proxy, management API, Postgres) stays on the tailnet.
import { NodeSpec } from "./config";

export interface ClusterNode {
  spec: NodeSpec;
  address: string;
  os?: "debian" | "ubuntu";
}

// nodesBlock renders `nodes:` as cluster.yaml writes it, one flow mapping
// per node; machines with only services (Postgres, the registry) are not
// nodes of the cluster and are left out.
export function nodesBlock(tailnet: string, nodes: ClusterNode[]): string {
  const lines = ["nodes:"];
  for (const { spec: n, address, os } of nodes) {
    if (!n.roles?.length) continue;
    const f: string[] = [
      `name: ${q(n.name)}`,
      `address: ${q(address)}`,
      `internal_address: ${q(`${n.name}.${tailnet}`)}`,
      `roles: [${n.roles.join(", ")}]`,
    ];
    if (n.runtime) f.push(`runtime: ${n.runtime}`);
    if (os ?? n.os) f.push(`os: ${os ?? n.os}`);
    if (n.region) f.push(`region: ${q(n.region)}`);
    lines.push(`  - {${f.join(", ")}}`);
  }
  return lines.join("\n") + "\n";
}

// q quotes a YAML scalar: a JSON string is a YAML double-quoted scalar, so
// no address or name can change the document's structure.
const q = (s: string) => JSON.stringify(s);
