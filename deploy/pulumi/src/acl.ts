// The tailnet's policy: each role reaches only the ports it needs on the
// roles it talks to, and nothing else (Tailscale denies what no rule
// accepts). A compromised worker can answer the edges and call the
// operators' management API, and that is all: no other worker's node API,
// no operator's Postgres, no edge.
import { InfraConfig, Role, Service, roles, tagOf } from "./config";

export interface Rule {
  action: "accept";
  src: string[];
  dst: string[]; // "tag:x:port[,port]"
  // why is kept out of the policy sent to Tailscale (it has no such field);
  // it says which flow needs the rule.
  why: string;
}

export interface AclTest {
  src: string;
  accept?: string[];
  deny?: string[];
}

export interface Policy {
  groups: Record<string, string[]>;
  tagOwners: Record<string, string[]>;
  acls: Omit<Rule, "why">[];
  tests: AclTest[];
}

export const adminGroup = "group:zw-admins";

interface Flow {
  from: (Role | Service | "admins")[];
  to: Role | Service;
  port: number;
  why: string;
}

// flows are every connection between the platform's machines.
export function flows(cfg: InfraConfig): Flow[] {
  const p = cfg.ports;
  const f: Flow[] = [
    { from: ["edge"], to: "worker", port: p.nodeProxy, why: "the edge proxies requests to the node-proxies (NODE_PROXY_TOKEN)" },
    { from: ["api"], to: "worker", port: p.nodeApi, why: "the api reads instances' logs from the node APIs (CLUSTER_TOKEN)" },
    { from: ["worker", "admins"], to: "operator", port: p.management, why: "workers fetch their instances' variables and registry credential (OPERATOR_URL); admins use the management API" },
  ];
  const hosted = new Set(cfg.nodes.flatMap((n) => n.services ?? []));
  if (hosted.has("postgres")) {
    f.push({ from: [...roles], to: "postgres", port: p.postgres, why: "every role keeps its state in Postgres (DATABASE_URL)" });
  }
  if (hosted.has("registry")) {
    f.push({ from: ["builder", "worker", "operator"], to: "registry", port: p.registry, why: "builders push images, workers pull them, operators delete them" });
  }
  return f;
}

const principal = (w: Role | Service | "admins") => (w === "admins" ? adminGroup : tagOf(w));

// policy is the tailnet policy file for cfg.
export function policy(cfg: InfraConfig): Policy {
  // Every role's tag exists even without a node yet: the rules and tests
  // name them all, and Tailscale refuses a policy naming an unowned tag.
  const tags = [...roles, ...new Set(cfg.nodes.flatMap((n) => n.services ?? []))];
  const rules: Rule[] = flows(cfg).map((f) => ({
    action: "accept",
    src: f.from.map(principal),
    dst: [`${tagOf(f.to)}:${f.port}`],
    why: f.why,
  }));
  // Admins reach every node over SSH: bootstrap installs and upgrades them.
  rules.push({ action: "accept", src: [adminGroup], dst: tags.map((t) => `${tagOf(t)}:22`), why: "zeitwork bootstrap connects over SSH" });

  return {
    groups: { [adminGroup]: [...cfg.tailscale.admins] },
    tagOwners: Object.fromEntries(tags.map((t) => [tagOf(t), [adminGroup]])),
    acls: rules.map(({ why: _why, ...r }) => r),
    tests: tests(cfg),
  };
}

// tests are checked by Tailscale itself whenever the policy is saved: a
// change that opens one of the denied paths is refused by the API.
function tests(cfg: InfraConfig): AclTest[] {
  const p = cfg.ports;
  const hosted = new Set(cfg.nodes.flatMap((n) => n.services ?? []));
  const t: AclTest[] = [
    { src: tagOf("edge"), accept: [`${tagOf("worker")}:${p.nodeProxy}`], deny: [`${tagOf("worker")}:${p.nodeApi}`, `${tagOf("operator")}:${p.management}`, `${tagOf("worker")}:22`] },
    { src: tagOf("worker"), accept: [`${tagOf("operator")}:${p.management}`], deny: [`${tagOf("operator")}:${p.postgres}`, `${tagOf("worker")}:${p.nodeApi}`, `${tagOf("worker")}:${p.nodeProxy}`, `${tagOf("edge")}:443`] },
    { src: tagOf("api"), accept: [`${tagOf("worker")}:${p.nodeApi}`], deny: [`${tagOf("worker")}:${p.nodeProxy}`, `${tagOf("operator")}:${p.management}`] },
    { src: tagOf("builder"), deny: [`${tagOf("worker")}:${p.nodeApi}`, `${tagOf("operator")}:${p.management}`] },
  ];
  if (hosted.has("postgres")) {
    for (const r of roles) t.push({ src: tagOf(r), accept: [`${tagOf("postgres")}:${p.postgres}`], deny: [`${tagOf("postgres")}:22`] });
  }
  return t;
}

// allowed evaluates a policy as Tailscale does for tagged devices: a
// connection from a device with srcTags to one with dstTags on port is
// accepted when some rule names one of srcTags (or a group the admin
// belongs to) as source and one of dstTags with that port as destination.
export function allowed(pol: Pick<Policy, "acls" | "groups">, src: string, dstTags: string[], port: number): boolean {
  const srcs = new Set([src, ...Object.entries(pol.groups).filter(([, m]) => m.includes(src)).map(([g]) => g)]);
  return pol.acls.some(
    (r) =>
      r.action === "accept" &&
      r.src.some((s) => s === "*" || srcs.has(s)) &&
      r.dst.some((d) => {
        const i = d.lastIndexOf(":");
        const host = d.slice(0, i);
        return (host === "*" || dstTags.includes(host)) && portMatches(d.slice(i + 1), port);
      }),
  );
}

function portMatches(spec: string, port: number): boolean {
  return spec.split(",").some((s) => {
    if (s === "*") return true;
    const [lo, hi] = s.split("-").map(Number);
    return hi === undefined ? port === lo : port >= lo && port <= hi;
  });
}
