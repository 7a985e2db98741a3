// The stack's configuration (Pulumi.<stack>.yaml, namespace "zeitwork"),
// parsed and checked before any resource is declared, so that a mistake is
// reported with the key that holds it instead of as a half-applied plan.
import * as pulumi from "@pulumi/pulumi";

// Roles are the `zeitwork <role>` processes a node runs, as cluster.yaml
// names them.
export const roles = ["operator", "worker", "builder", "edge", "api"] as const;
export type Role = (typeof roles)[number];

// Services are what a machine hosts for the platform besides its roles,
// where the platform hosts them itself: they get a tag (and ACL rules) of
// their own but no entry in cluster.yaml.
export const services = ["postgres", "registry"] as const;
export type Service = (typeof services)[number];

export interface Platform {
  domains: string[];
  appsDomain: string;
  edgeHost: string;
  // dnsDomain is the platform domain custom domains may CNAME to under any
  // name (<anything>.zeitwork-dns.com); its apex and wildcard reach the edges.
  dnsDomain?: string;
  // webHost serves the dashboard and /v1 (the api nodes, Kamal's proxy).
  webHost?: string;
}

export interface Cloudflare {
  // zoneIds maps each platform domain to its Cloudflare zone id.
  zoneIds: Record<string, string>;
  // proxied puts Cloudflare in front of the edges (EDGE_CLOUDFLARE_FRONTED=true
  // on the edges must say the same).
  proxied?: boolean;
  // webProxied puts Cloudflare in front of webHost (kamal-proxy then serves
  // a Cloudflare Origin CA certificate).
  webProxied?: boolean;
  ttl?: number;
}

export interface Tailscale {
  tailnet: string; // e.g. example.ts.net: internal addresses are <node>.<tailnet>
  admins: string[]; // the people who may SSH to nodes and call the management API
  keyExpiryDays?: number;
}

export interface Servers {
  create: boolean;
  image?: string;
  serverType?: string;
  location?: string;
  sshPublicKey?: string;
  // sshSources may reach port 22 (bootstrap's SSH); default anywhere.
  sshSources?: string[];
}

export interface NodeSpec {
  name: string;
  roles?: Role[];
  services?: Service[];
  runtime?: "runc" | "kata";
  os?: "debian" | "ubuntu";
  region?: string;
  // address/ipv6: the public addresses of a machine not created here.
  address?: string;
  ipv6?: string;
  serverType?: string;
  location?: string;
}

export interface Ports {
  management: number;
  nodeApi: number;
  nodeProxy: number;
  postgres: number;
  registry: number;
}

export interface InfraConfig {
  platform: Platform;
  cloudflare: Cloudflare;
  tailscale: Tailscale;
  servers: Servers;
  nodes: NodeSpec[];
  ports: Ports;
}

// The ports each role listens on, as internal/config and internal/bootstrap
// set them: the management API (OPERATOR_ADDR, 8081), the node API
// (NODE_API_PORT, 8082), the node-proxy (NODE_INTERNAL_ADDRESS, 8090).
export const defaultPorts: Ports = { management: 8081, nodeApi: 8082, nodeProxy: 8090, postgres: 5432, registry: 5000 };

// The latest Ubuntu LTS image on Hetzner Cloud; internal/bootstrap supports
// Ubuntu 24.04 and later.
export const defaultImage = "ubuntu-26.04";

export class ConfigError extends Error {
  constructor(public readonly problems: string[]) {
    super("invalid stack configuration:\n  " + problems.join("\n  "));
  }
}

// fields are the keys each object may have: a misspelt optional key would
// otherwise be ignored without a word, and its default taken.
const fields: Record<string, string[]> = {
  "": ["platform", "cloudflare", "tailscale", "servers", "nodes", "ports"],
  platform: ["domains", "appsDomain", "edgeHost", "dnsDomain", "webHost"],
  cloudflare: ["zoneIds", "proxied", "webProxied", "ttl"],
  tailscale: ["tailnet", "admins", "keyExpiryDays"],
  servers: ["create", "image", "serverType", "location", "sshPublicKey", "sshSources"],
  nodes: ["name", "roles", "services", "runtime", "os", "region", "address", "ipv6", "serverType", "location"],
  ports: Object.keys(defaultPorts),
};

function unknownKeys(): string[] {
  const bad: string[] = [];
  const cfg = pulumi.runtime.allConfig();
  for (const [key, raw] of Object.entries(cfg)) {
    if (!key.startsWith("zeitwork:")) continue;
    const top = key.slice("zeitwork:".length);
    if (!fields[""].includes(top)) {
      bad.push(`${key}: unknown key (one of ${fields[""].join(", ")})`);
      continue;
    }
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch {
      continue; // a plain string: requireObject reports it
    }
    const objects = Array.isArray(v) ? v.map((o, i) => [`${key}[${i}]`, o] as const) : [[key, v] as const];
    for (const [at, o] of objects) {
      if (o && typeof o === "object" && !Array.isArray(o)) {
        for (const f of Object.keys(o)) if (!fields[top].includes(f)) bad.push(`${at}.${f}: unknown key (one of ${fields[top].join(", ")})`);
      }
    }
  }
  return bad;
}

// load reads the stack's "zeitwork:*" keys.
export function load(): InfraConfig {
  const unknown = unknownKeys();
  if (unknown.length) throw new ConfigError(unknown);
  const c = new pulumi.Config("zeitwork");
  return check({
    platform: c.requireObject<Platform>("platform"),
    cloudflare: c.requireObject<Cloudflare>("cloudflare"),
    tailscale: c.requireObject<Tailscale>("tailscale"),
    servers: c.getObject<Servers>("servers") ?? { create: false },
    nodes: c.requireObject<NodeSpec[]>("nodes"),
    ports: { ...defaultPorts, ...(c.getObject<Partial<Ports>>("ports") ?? {}) },
  });
}

const nameRe = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const domainRe = /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;

// under reports whether name is domain or a name below it.
export function under(name: string, domain: string): boolean {
  return name === domain || name.endsWith("." + domain);
}

// check returns cfg with its defaults, or throws every problem at once,
// each with the key that holds it.
export function check(cfg: InfraConfig): InfraConfig {
  const bad: string[] = [];
  const p = cfg.platform;
  if (!p?.domains?.length) bad.push("zeitwork:platform.domains: at least one domain is needed");
  for (const [i, d] of (p?.domains ?? []).entries()) {
    if (!domainRe.test(d)) bad.push(`zeitwork:platform.domains[${i}]: ${JSON.stringify(d)} is not a domain name`);
    if (!cfg.cloudflare?.zoneIds?.[d]) bad.push(`zeitwork:cloudflare.zoneIds: no zone id for ${d}`);
  }
  if (!p?.domains?.includes(p.appsDomain)) bad.push(`zeitwork:platform.appsDomain: ${JSON.stringify(p?.appsDomain)} is not one of platform.domains`);
  if (p?.dnsDomain && !p.domains.includes(p.dnsDomain)) bad.push(`zeitwork:platform.dnsDomain: ${JSON.stringify(p.dnsDomain)} is not one of platform.domains`);
  for (const key of ["edgeHost", "webHost"] as const) {
    const host = p?.[key];
    if (key === "edgeHost" && !host) bad.push("zeitwork:platform.edgeHost: required");
    if (host && !p.domains.some((d) => under(host, d))) bad.push(`zeitwork:platform.${key}: ${host} is under none of platform.domains`);
  }
  if (p?.webHost && [p.edgeHost, p.dnsDomain].includes(p.webHost)) bad.push(`zeitwork:platform.webHost: ${p.webHost} already points at the edges`);
  if (!cfg.tailscale?.tailnet || !domainRe.test(cfg.tailscale.tailnet)) bad.push("zeitwork:tailscale.tailnet: required, e.g. example.ts.net");
  if (!cfg.tailscale?.admins?.length) bad.push("zeitwork:tailscale.admins: at least one login (who may SSH to the nodes)");
  if (cfg.servers.create && !cfg.servers.sshPublicKey) bad.push("zeitwork:servers.sshPublicKey: required when servers.create is true");

  const seen = new Set<string>();
  for (const [i, n] of (cfg.nodes ?? []).entries()) {
    const at = `zeitwork:nodes[${i}]`;
    if (!nameRe.test(n.name ?? "")) bad.push(`${at}.name: ${JSON.stringify(n.name)} is not a host name label`);
    if (seen.has(n.name)) bad.push(`${at}.name: ${n.name} is also an earlier node's name`);
    seen.add(n.name);
    for (const r of n.roles ?? []) if (!roles.includes(r)) bad.push(`${at}.roles: unknown role ${JSON.stringify(r)} (one of ${roles.join(", ")})`);
    for (const s of n.services ?? []) if (!services.includes(s)) bad.push(`${at}.services: unknown service ${JSON.stringify(s)} (one of ${services.join(", ")})`);
    if (!n.roles?.length && !n.services?.length) bad.push(`${at}: has neither roles nor services`);
    if (n.runtime && !n.roles?.includes("worker")) bad.push(`${at}.runtime: only workers have a runtime`);
    if (!cfg.servers.create && !n.address) bad.push(`${at}.address: required when servers.create is false`);
  }
  const count = (r: Role) => (cfg.nodes ?? []).filter((n) => n.roles?.includes(r)).length;
  if (count("edge") < 1) bad.push("zeitwork:nodes: at least one edge is needed (the DNS records point at the edges)");
  if (p?.webHost && count("api") < 1) bad.push("zeitwork:platform.webHost: no node has the api role");
  if (bad.length) throw new ConfigError(bad);
  return cfg;
}

// tagOf is a role's or service's Tailscale tag.
export function tagOf(what: Role | Service): string {
  return `tag:zw-${what}`;
}

// tagsOf are a node's tags, sorted: one per role and service.
export function tagsOf(n: NodeSpec): string[] {
  return [...(n.roles ?? []), ...(n.services ?? [])].map(tagOf).sort();
}
