// The platform's DNS at Cloudflare: where customers' CNAMEs, the apps
// domain's names and the dashboard lead. The edges' certificates for the
// same names come by DNS-01 through the edges' own ACME code, not from here.
import * as pulumi from "@pulumi/pulumi";
import { InfraConfig, under } from "./config";

export interface Host {
  name: string; // the node's name
  ipv4: pulumi.Input<string>;
  ipv6?: pulumi.Input<string>;
}

export interface RecordSpec {
  key: string; // the Pulumi resource name: stable across runs
  zone: string; // the platform domain whose zone holds the record
  name: string;
  type: "A" | "AAAA" | "CNAME";
  content: pulumi.Input<string>;
  proxied: boolean;
}

// records plans every record: the edge host's addresses (one A and one
// AAAA per edge), the apps domain's wildcard and the CNAME target domain's
// wildcard as CNAMEs to the edge host (so moving the edges changes one
// name), that domain's apex on the edges (a CNAME cannot sit at an apex),
// and the web host on the api nodes (Kamal's proxy).
export function records(cfg: InfraConfig, edges: Host[], apis: Host[]): RecordSpec[] {
  const p = cfg.platform;
  const proxied = cfg.cloudflare.proxied ?? false;
  const zone = (name: string) => {
    // The longest platform domain holding name: a zone for a.b.com wins over b.com.
    const d = [...p.domains].sort((a, b) => b.length - a.length).find((d) => under(name, d));
    if (!d) throw new Error(`${name} is under none of platform.domains`);
    return d;
  };
  const out: RecordSpec[] = [];
  // Pulumi names: "*" reads as a glob in the CLI's --target, so it is spelt out.
  const key = (name: string, rest: string) => `${name.replace(/^\*\./, "wildcard.")}-${rest}`;
  const addresses = (name: string, hosts: Host[], proxied: boolean) => {
    for (const h of hosts) {
      out.push({ key: key(name, `A-${h.name}`), zone: zone(name), name, type: "A", content: h.ipv4, proxied });
      if (h.ipv6) out.push({ key: key(name, `AAAA-${h.name}`), zone: zone(name), name, type: "AAAA", content: h.ipv6, proxied });
    }
  };
  const cname = (name: string) => out.push({ key: key(name, "CNAME"), zone: zone(name), name, type: "CNAME", content: p.edgeHost, proxied });

  addresses(p.edgeHost, edges, proxied);
  cname(`*.${p.appsDomain}`);
  if (p.dnsDomain) {
    addresses(p.dnsDomain, edges, proxied);
    cname(`*.${p.dnsDomain}`);
  }
  if (p.webHost) addresses(p.webHost, apis, cfg.cloudflare.webProxied ?? false);
  return out;
}
