// Zeitwork's infrastructure: `pulumi up` in deploy/pulumi (see the README's
// "Pulumi, Tailscale and Kamal"). The outputs feed cluster.yaml:
// `pulumi stack output clusterNodes` is its nodes block.
import { load } from "./src/config";
import { define } from "./src/infra";

const out = define(load());

export const policy = out.policy;
export const authKeys = out.authKeys;
export const servers = out.servers;
export const records = out.records;
export const clusterNodes = out.clusterNodes;
