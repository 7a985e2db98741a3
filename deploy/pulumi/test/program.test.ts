// The program as `pulumi up` runs it (index.ts), on the documented example
// stack (Pulumi.example.yaml): the example is a valid configuration, and
// the entry point exports what the README says. A file of its own, so a
// process of its own: the mocks and the config are process-wide.
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as yaml from "js-yaml";
import { expect, it } from "vitest";

const types: string[] = [];
pulumi.runtime.setMocks(
  {
    newResource(args) {
      types.push(args.type);
      const state: Record<string, any> = { ...args.inputs };
      if (args.type === "hcloud:index/server:Server") state.ipv4Address = "198.51.100.1";
      if (args.type === "tailscale:index/tailnetKey:TailnetKey") state.key = "tskey-auth-x";
      return { id: `${args.name}-id`, state };
    },
    call: (args) => args.inputs,
  },
  "zeitwork-infra",
  "example",
  false,
);

const value = <T>(o: pulumi.Output<T>) => new Promise<T>((resolve) => o.apply(resolve));

it("runs index.ts on Pulumi.example.yaml", async () => {
  const doc = yaml.load(fs.readFileSync(path.join(__dirname, "..", "Pulumi.example.yaml"), "utf8")) as { config: Record<string, unknown> };
  pulumi.runtime.setAllConfig(Object.fromEntries(Object.entries(doc.config).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)])));
  const program = await import("../index");

  const nodes = await value(program.clusterNodes);
  expect(nodes.split("\n").filter((l) => l.startsWith("  - {"))).toHaveLength(8);
  expect(nodes).toContain('internal_address: "wk-3.example.ts.net", roles: [worker], runtime: kata, os: ubuntu}');
  const records = await value(program.records);
  expect(records).toContainEqual({ name: "*.zeitwork.app", type: "CNAME", content: "edge.zeitwork.com", proxied: false });
  expect(Object.keys(await value(program.authKeys)).sort()).toEqual(["api-operator", "builder", "edge", "operator", "worker"]);
  expect(JSON.parse(program.policy).groups).toEqual({ "group:zw-admins": ["ops@zeitwork.com"] });
  expect(types.filter((t) => t === "hcloud:index/server:Server")).toHaveLength(8);
});
