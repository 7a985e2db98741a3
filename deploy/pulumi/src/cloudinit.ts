// The first boot of a created server: join the tailnet under the node's
// name with its role's auth key, nothing more. Everything Zeitwork needs
// is installed later by `zeitwork bootstrap` over SSH, which is idempotent
// and can be rerun; cloud-init runs once.
import { NodeSpec } from "./config";

export function userData(n: NodeSpec, authKey: string): string {
  // The key goes through a 0600 file, not the command line (visible in ps
  // and in cloud-init's logs), and the file is deleted once used.
  return `#cloud-config
hostname: ${n.name}
package_update: true
write_files:
  - path: /run/zeitwork/tailscale-authkey
    permissions: "0600"
    owner: root:root
    content: ${JSON.stringify(authKey)}
runcmd:
  - [sh, -c, "curl -fsSL https://tailscale.com/install.sh | sh"]
  - [tailscale, up, --auth-key=file:/run/zeitwork/tailscale-authkey, --hostname=${n.name}, --ssh=false]
  - [rm, -f, /run/zeitwork/tailscale-authkey]
`;
}
