package bootstrap

import (
	"bytes"
	"cmp"
	"embed"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"
	"text/template"

	"github.com/zeitwork/zeitwork/deploy/dev"
)

// Where things go on a node.
const (
	BinaryPath = "/usr/local/bin/zeitwork"
	EnvDir     = "/etc/zeitwork"
	UnitDir    = "/etc/systemd/system"
	SysctlPath = "/etc/sysctl.d/90-zeitwork.conf"
	// NodeStateDir is the node agent's NODE_STATE_DIR, and NodeIDFile the
	// file in it where the agent keeps its node id (internal/nodeagent
	// reads it on start; TestRecordedIDIsTheOneTheAgentRegistersWith holds
	// the two together).
	NodeStateDir = "/var/lib/zeitwork/nodeagent"
	NodeIDFile   = "node-id"
	BuildkitAddr = "unix:///run/buildkit/buildkitd.sock"
	// The network of buildkitd's RUN steps (deploy/dev's templates, the
	// same policy as locally): a bridge of their own, internet only.
	BuildkitNetFile = EnvDir + "/buildkit-net.nft"
	BuildkitCNIFile = EnvDir + "/buildkit-cni.conflist"
	BuildkitCNIDir  = "/usr/lib/cni" // Debian's and Ubuntu's containernetworking-plugins
	buildBridge     = "zw-build0"
	buildSubnet     = "10.213.77.0/24"
	buildTable      = "zeitwork_build"
	// KataConfig is where the Kata Containers static release puts its
	// configuration.
	KataConfig = "/opt/kata/share/defaults/kata-containers/configuration.toml"
)

// runtimeHandler maps cluster.yaml's runtime to containerd's handler.
var runtimeHandler = map[Runtime]string{RuntimeRunc: "io.containerd.runc.v2", RuntimeKata: "io.containerd.kata.v2"}

// File is one file bootstrap writes on a node.
type File struct {
	Path string
	Mode os.FileMode
	Data []byte
}

// Values are the secrets cluster.yaml refers to, resolved from the
// environment when bootstrap runs.
type Values struct {
	DatabaseURL string
	// DatabaseURLs are the roles' own users (postgres.role_users); a role
	// without one connects with DatabaseURL.
	DatabaseURLs      map[Role]string
	ClusterToken      string
	NodeProxyToken    string
	ManagementToken   string
	SecretsKeys       string
	CertificateKeys   string
	CloudflareToken   string
	S3AccessKeyID     string // the MinIO root user when MinIO runs on a node
	S3SecretAccessKey string
}

//go:embed units
var unitFS embed.FS

var templates = template.Must(template.ParseFS(unitFS, "units/*.tmpl"))

// service is one zeitwork role as a systemd unit.
type service struct {
	Role         Role
	Command      string // zeitwork <command>
	After        []string
	Requires     []string
	Unprivileged bool
	Extra        []string
	Binary       string
	EnvFile      string
}

// services are the node's zeitwork units, in the order they start.
func services(n Node) []service {
	var s []service
	add := func(r Role, cmd string, mod func(*service)) {
		if !n.Has(r) {
			return
		}
		sv := service{Role: r, Command: cmd, Binary: BinaryPath, EnvFile: path.Join(EnvDir, cmd+".env")}
		if mod != nil {
			mod(&sv)
		}
		s = append(s, sv)
	}
	add(RoleOperator, "operator", func(s *service) { s.Unprivileged = true })
	add(RoleAPI, "api", func(s *service) { s.Unprivileged = true })
	add(RoleWorker, "nodeagent", func(s *service) {
		// The agent owns the machine's instance networking and talks to
		// containerd's root socket: it runs as root.
		s.After, s.Requires = []string{"containerd.service"}, []string{"containerd.service"}
		s.Extra = []string{"StateDirectory=zeitwork/nodeagent", "LogsDirectory=zeitwork/instances"}
	})
	add(RoleBuilder, "builder", func(s *service) {
		s.After, s.Requires = []string{"buildkit.service"}, []string{"buildkit.service"}
	})
	add(RoleEdge, "edge", func(s *service) {
		s.Unprivileged = true
		s.Extra = []string{"StateDirectory=zeitwork/edge", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"}
	})
	return s
}

// Units are the systemd units node n runs, in the order they start: the
// daemons the roles need, then the roles.
func Units(n Node) []string {
	var u []string
	if n.Has(RoleWorker) {
		u = append(u, "containerd.service")
	}
	if n.Has(RoleBuilder) {
		u = append(u, "buildkit.service")
	}
	for _, s := range services(n) {
		u = append(u, "zeitwork-"+s.Command+".service")
	}
	return u
}

// clusterAddrs are the IP addresses of the cluster's nodes, SSH (often
// public) and internal alike, sorted: RUN steps of builds may reach none of
// them. Host names are left out: nftables needs addresses.
func clusterAddrs(c *Cluster) (v4, v6 []string) {
	seen := map[netip.Addr]bool{}
	for _, n := range c.Nodes {
		for _, a := range []string{hostOf(n.Address), hostOf(n.InternalAddress)} {
			ip, err := netip.ParseAddr(a)
			if err != nil || seen[ip.Unmap()] {
				continue
			}
			ip = ip.Unmap()
			seen[ip] = true
			if ip.Is4() {
				v4 = append(v4, ip.String())
			} else {
				v6 = append(v6, ip.String())
			}
		}
	}
	slices.Sort(v4)
	slices.Sort(v6)
	return v4, v6
}

// nftElements is a set's elements line, or nothing for an empty set.
func nftElements(addrs []string) string {
	if len(addrs) == 0 {
		return ""
	}
	return "elements = { " + strings.Join(addrs, ", ") + " }"
}

// Render returns every file bootstrap writes on node n (the binary aside),
// sorted by path. Environment files hold secrets and are 0600.
func Render(c *Cluster, n Node, v Values) ([]File, error) {
	var files []File
	for _, s := range services(n) {
		var unit bytes.Buffer
		if err := templates.ExecuteTemplate(&unit, "zeitwork.service.tmpl", s); err != nil {
			return nil, err
		}
		files = append(files, File{Path: path.Join(UnitDir, "zeitwork-"+s.Command+".service"), Mode: 0o644, Data: unit.Bytes()})
		env, err := envFile(environment(c, n, s.Role, v))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.EnvFile, err)
		}
		files = append(files, File{Path: s.EnvFile, Mode: 0o600, Data: env})
	}
	if n.Has(RoleBuilder) {
		var unit bytes.Buffer
		if err := templates.ExecuteTemplate(&unit, "buildkit.service.tmpl", map[string]string{
			"Addr": BuildkitAddr, "NetFile": BuildkitNetFile, "CNIFile": BuildkitCNIFile, "CNIDir": BuildkitCNIDir,
		}); err != nil {
			return nil, err
		}
		// RUN steps may reach no private address, so they get public
		// resolvers (buildkitd's own fallback for a host whose resolver
		// is local, as systemd-resolved is).
		cluster4, cluster6 := clusterAddrs(c)
		vars := strings.NewReplacer("@BUILD_BRIDGE@", buildBridge, "@BUILD_SUBNET@", buildSubnet, "@BUILD_TABLE@", buildTable,
			"@BUILD_RESOLVERS4@", "", "@BUILD_CLUSTER4@", nftElements(cluster4), "@BUILD_CLUSTER6@", nftElements(cluster6),
			"@STATE@", "/var/lib/buildkit")
		files = append(files,
			File{Path: path.Join(UnitDir, "buildkit.service"), Mode: 0o644, Data: unit.Bytes()},
			File{Path: BuildkitNetFile, Mode: 0o644, Data: []byte(vars.Replace(dev.BuildkitNet))},
			File{Path: BuildkitCNIFile, Mode: 0o644, Data: []byte(vars.Replace(dev.BuildkitCNI))})
	}
	if n.Has(RoleWorker) {
		var sysctl bytes.Buffer
		if err := templates.ExecuteTemplate(&sysctl, "sysctl.conf.tmpl", nil); err != nil {
			return nil, err
		}
		files = append(files, File{Path: SysctlPath, Mode: 0o644, Data: sysctl.Bytes()})
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// NodeIDState is the node agent's id file holding a recorded node's id,
// written before the agent first starts on a reinstalled machine.
func NodeIDState(id string) File {
	return File{Path: path.Join(NodeStateDir, NodeIDFile), Mode: 0o600, Data: []byte(id + "\n")}
}

type kv struct{ k, v string }

// environment is the role's configuration (see internal/config).
func environment(c *Cluster, n Node, r Role, v Values) []kv {
	dbURL := v.DatabaseURL
	if u, ok := v.DatabaseURLs[r]; ok {
		dbURL = u
	}
	e := []kv{{"LOG_FORMAT", "json"}, {"DATABASE_URL", dbURL}}
	platform := []kv{
		{"EDGE_PLATFORM_DOMAINS", strings.Join(c.Platform.Domains, ",")},
		{"EDGE_APPS_DOMAIN", c.Platform.AppsDomain},
		{"EDGE_HOST", c.Platform.EdgeHost},
	}
	s3 := func() []kv {
		if b := c.S3.Existing; b != nil {
			return []kv{{"S3_ENDPOINT", b.Endpoint}, {"S3_REGION", cmp.Or(b.Region, "us-east-1")}, {"S3_BUCKET", b.Bucket},
				{"S3_ACCESS_KEY_ID", b.AccessKeyID}, {"S3_SECRET_ACCESS_KEY", v.S3SecretAccessKey}}
		}
		m := c.S3.MinIO
		return []kv{{"S3_ENDPOINT", "http://" + net.JoinHostPort(c.node(m.Node).InternalAddress, "9000")}, {"S3_REGION", "us-east-1"},
			{"S3_BUCKET", m.Bucket}, {"S3_ACCESS_KEY_ID", v.S3AccessKeyID}, {"S3_SECRET_ACCESS_KEY", v.S3SecretAccessKey}}
	}
	registry := kv{"REGISTRY_ADDR", c.Registry.Address}
	switch r {
	case RoleOperator:
		// The operator decrypts variables for the one node an instance is
		// placed on (nodes hold no key); its management API listens on the
		// private address the workers are given in OPERATOR_URL.
		e = append(e, kv{"MANAGEMENT_TOKEN", v.ManagementToken}, kv{"SECRETS_KEYS", v.SecretsKeys},
			kv{"OPERATOR_ADDR", net.JoinHostPort(n.InternalAddress, ManagementPort)}, registry)
		e = append(e, platform...)
	case RoleAPI:
		e = append(e, kv{"CLUSTER_TOKEN", v.ClusterToken}, kv{"SECRETS_KEYS", v.SecretsKeys})
		e = append(e, platform...)
		e = append(e, s3()...)
	case RoleWorker:
		e = append(e, kv{"CLUSTER_TOKEN", v.ClusterToken}, kv{"NODE_PROXY_TOKEN", v.NodeProxyToken}, kv{"OPERATOR_URL", c.operatorURLs()},
			kv{"NODE_INTERNAL_ADDRESS", n.AgentAddress()}, kv{"NODE_STATE_DIR", NodeStateDir},
			kv{"CLUSTER_PREFIX", c.Network.Prefix}, kv{"RUNTIME_HANDLER", runtimeHandler[n.Runtime]}, registry)
		if n.Runtime == RuntimeKata {
			e = append(e, kv{"RUNTIME_CONFIG_PATH", KataConfig})
		}
		if n.Region != "" {
			e = append(e, kv{"NODE_REGION", n.Region})
		}
	case RoleBuilder:
		e = append(e, kv{"BUILDER_ID", n.Name}, kv{"BUILDKIT_ADDR", BuildkitAddr}, registry)
		e = append(e, s3()...)
	case RoleEdge:
		e = append(e, kv{"NODE_PROXY_TOKEN", v.NodeProxyToken}, kv{"CERTIFICATE_KEYS", v.CertificateKeys}, kv{"ACME_EMAIL", c.Platform.ACMEEmail},
			kv{"CLOUDFLARE_API_TOKEN", v.CloudflareToken}, kv{"EDGE_ROUTES_SNAPSHOT", "/var/lib/zeitwork/edge/routes.json"})
		e = append(e, platform...)
	}
	return e
}

// ManagementPort is where operators serve the management API.
const ManagementPort = "8081"

// operatorURLs is every operator's management API, the list a worker tries
// in turn for its instances' variables and its registry credential.
func (c *Cluster) operatorURLs() string {
	var urls []string
	for _, n := range c.Nodes {
		if slices.Contains(n.Roles, RoleOperator) {
			urls = append(urls, "http://"+net.JoinHostPort(n.InternalAddress, ManagementPort))
		}
	}
	return strings.Join(urls, ",")
}

func (c *Cluster) node(name string) Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return Node{}
}

// envFile renders systemd's EnvironmentFile format. Values that are not
// plainly safe are single-quoted, which systemd reads literally: a $ or a
// backslash in a password stays what it is.
func envFile(e []kv) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Written by zeitwork bootstrap; holds secrets (mode 0600).\n")
	for _, p := range e {
		switch {
		case strings.ContainsAny(p.v, "\n\r\x00"):
			return nil, fmt.Errorf("%s: a value on more than one line cannot go in an environment file", p.k)
		case strings.Contains(p.v, "'"):
			return nil, fmt.Errorf("%s: a value with a single quote cannot go in an environment file", p.k)
		case p.v != "" && strings.IndexFunc(p.v, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@,+=", r))
		}) < 0:
			fmt.Fprintf(&b, "%s=%s\n", p.k, p.v)
		default:
			fmt.Fprintf(&b, "%s='%s'\n", p.k, p.v)
		}
	}
	return b.Bytes(), nil
}
