package bootstrap

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/zeitwork/zeitwork/deploy/dev"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/registryauth"
	"github.com/zeitwork/zeitwork/internal/runtime/logwriter"
)

// Where things go on a node.
const (
	BinaryPath = "/usr/local/bin/zeitwork"
	// LogWriterPath is next to BinaryPath, where the node agent looks for
	// it (logwriter.Beside).
	LogWriterPath = "/usr/local/bin/" + logwriter.Name
	EnvDir        = "/etc/zeitwork"
	UnitDir       = "/etc/systemd/system"
	SysctlPath    = "/etc/sysctl.d/90-zeitwork.conf"
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
	// ReleaseCNIDir holds release.cni_plugins when cluster.yaml gives them.
	ReleaseCNIDir  = "/usr/local/lib/zeitwork/cni"
	BuildkitdPath  = "/usr/local/bin/buildkitd"
	BuildctlPath   = "/usr/local/bin/buildctl"
	BuildkitConfig = "/etc/buildkit/buildkitd.toml"
	BuildkitState  = "/var/lib/buildkit"
	// MinIO (s3.minio) keeps its data in its StateDirectory, /var/lib/minio.
	MinIOPath = "/usr/local/bin/minio"
	MinIOEnv  = EnvDir + "/minio.env"
	MinIOPort = "9000"
	// The distribution registry (registry.node); its S3 credentials and
	// HTTP secret are in RegistryEnv, not in its configuration.
	RegistryPath   = "/usr/local/bin/registry"
	RegistryConfig = EnvDir + "/registry.yml"
	RegistryEnv    = EnvDir + "/registry.env"
	RegistryPort   = "5000"
	// RegistryTokenCert is the certificate of REGISTRY_TOKEN_KEY's public
	// key: the registry trusts tokens it verifies.
	RegistryTokenCert = EnvDir + "/registry-token.crt"
	// Kata Containers (runtime: kata): the static release unpacked under
	// /opt/kata, its shim linked where containerd looks for it (PATH), and
	// containerd's configuration naming the runtime.
	KataDir          = "/opt/kata"
	KataShim         = KataDir + "/bin/containerd-shim-kata-v2"
	KataShimLink     = "/usr/local/bin/containerd-shim-kata-v2"
	KataRelease      = KataDir + "/.zeitwork-release" // the tarball's digest, once unpacked
	ContainerdConfig = "/etc/containerd/config.toml"
	KVMDevice        = "/dev/kvm"
	buildBridge      = "zw-build0"
	buildSubnet      = "10.213.77.0/24"
	buildTable       = "zeitwork_build"
	// KataConfig is where the Kata Containers static release puts its
	// configuration.
	KataConfig = "/opt/kata/share/defaults/kata-containers/configuration.toml"
	// ACMECAFile is platform.acme_ca on an edge: the edge's ACME_CA_ROOTS.
	// Not a secret (0644): the edge runs as a dynamic user.
	ACMECAFile = EnvDir + "/acme-ca.pem"
	// BuilderHealthAddr is where a builder answers GET /v1/health
	// (BUILDER_HEALTH_ADDR): loopback only, asked over SSH by a rollout.
	BuilderHealthAddr = "127.0.0.1:9102"
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
	// The registry's token service (secrets.registry_*_env), or "".
	RegistryTokenKey         string
	RegistryCredentialSecret string
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
	// Sockets are the listening sockets systemd holds for the role and
	// passes it (LISTEN_FDS): they stay open while the service restarts,
	// so connections wait for the new process instead of being refused.
	Sockets []socket
}

// socket is a role's listening socket as a systemd socket unit.
type socket struct {
	Name   string // FileDescriptorName=, the listener the role takes it for
	Listen string // ListenStream=
	Unit   string
	// Service is the unit the socket is passed to (and starts when a
	// connection comes while it is stopped).
	Service string
}

// socketUnit names a role's socket: its first one shares the service's
// name, the others add theirs.
func socketUnit(command string, i int, name string) string {
	if i == 0 {
		return "zeitwork-" + command + ".socket"
	}
	return "zeitwork-" + command + "-" + name + ".socket"
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
		for i := range sv.Sockets {
			so := &sv.Sockets[i]
			so.Unit, so.Service = socketUnit(cmd, i, so.Name), "zeitwork-"+cmd+".service"
			// Restarting the service leaves its sockets be; stopping or
			// restarting a socket takes the service with it.
			sv.After, sv.Requires = append(sv.After, so.Unit), append(sv.Requires, so.Unit)
		}
		s = append(s, sv)
	}
	add(RoleOperator, "operator", func(s *service) { s.Unprivileged = true })
	add(RoleAPI, "api", func(s *service) {
		s.Unprivileged = true
		s.Sockets = []socket{{Name: "http", Listen: APIPort}}
	})
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
		// systemd binds ports 80 and 443: the edge needs no capability.
		s.Sockets = []socket{{Name: "http", Listen: EdgeHTTPPort}, {Name: "https", Listen: EdgeHTTPSPort}}
		s.Extra = []string{"StateDirectory=zeitwork/edge", "CapabilityBoundingSet="}
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
		for _, so := range s.Sockets {
			u = append(u, so.Unit)
		}
		u = append(u, "zeitwork-"+s.Command+".service")
	}
	return u
}

// The roles' ports, on every address (IPv6 and IPv4): systemd's sockets
// hold them (config's defaults for API_ADDR, EDGE_HTTP_ADDR and
// EDGE_HTTPS_ADDR, which bootstrap does not set).
const (
	APIPort       = "8080"
	EdgeHTTPPort  = "80"
	EdgeHTTPSPort = "443"
)

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
		for _, so := range s.Sockets {
			var b bytes.Buffer
			if err := templates.ExecuteTemplate(&b, "zeitwork.socket.tmpl", so); err != nil {
				return nil, err
			}
			files = append(files, File{Path: path.Join(UnitDir, so.Unit), Mode: 0o644, Data: b.Bytes()})
		}
		env, err := envFile(environment(c, n, s.Role, v))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.EnvFile, err)
		}
		files = append(files, File{Path: s.EnvFile, Mode: 0o600, Data: env})
	}
	render := func(p string, mode os.FileMode, tmpl string, data any) error {
		var b bytes.Buffer
		if err := templates.ExecuteTemplate(&b, tmpl, data); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		files = append(files, File{Path: p, Mode: mode, Data: b.Bytes()})
		return nil
	}
	if n.Has(RoleBuilder) {
		cniDir := BuildkitCNIDir
		if c.Release.CNIPlugins != "" {
			cniDir = ReleaseCNIDir
		}
		if err := render(path.Join(UnitDir, "buildkit.service"), 0o644, "buildkit.service.tmpl", map[string]string{
			"Binary": BuildkitdPath, "Config": BuildkitConfig, "NetFile": BuildkitNetFile,
		}); err != nil {
			return nil, err
		}
		var plainHTTP []string
		if c.Registry.Insecure {
			plainHTTP = []string{c.Registry.Address}
		}
		if err := render(BuildkitConfig, 0o644, "buildkitd.toml.tmpl", map[string]any{
			"State": BuildkitState, "Addr": BuildkitAddr, "CNIFile": BuildkitCNIFile, "CNIDir": cniDir, "PlainHTTP": plainHTTP,
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
			File{Path: BuildkitNetFile, Mode: 0o644, Data: []byte(vars.Replace(dev.BuildkitNet))},
			File{Path: BuildkitCNIFile, Mode: 0o644, Data: []byte(vars.Replace(dev.BuildkitCNI))})
	}
	if n.Has(RoleEdge) && len(c.Platform.acmeCA) > 0 {
		files = append(files, File{Path: ACMECAFile, Mode: 0o644, Data: c.Platform.acmeCA})
	}
	if n.Has(RoleWorker) {
		if err := render(SysctlPath, 0o644, "sysctl.conf.tmpl", nil); err != nil {
			return nil, err
		}
		if n.Runtime == RuntimeKata {
			if err := render(ContainerdConfig, 0o644, "containerd-kata.toml.tmpl", map[string]string{"Handler": runtimeHandler[RuntimeKata], "Config": KataConfig}); err != nil {
				return nil, err
			}
		}
	}
	if m := c.S3.MinIO; m != nil && m.Node == n.Name {
		if err := render(path.Join(UnitDir, "minio.service"), 0o644, "minio.service.tmpl", map[string]string{
			"Binary": MinIOPath, "EnvFile": MinIOEnv, "Addr": net.JoinHostPort(n.InternalAddress, MinIOPort),
		}); err != nil {
			return nil, err
		}
		env, err := envFile([]kv{{"MINIO_ROOT_USER", v.S3AccessKeyID}, {"MINIO_ROOT_PASSWORD", v.S3SecretAccessKey}, {"MINIO_BROWSER", "off"}})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", MinIOEnv, err)
		}
		files = append(files, File{Path: MinIOEnv, Mode: 0o600, Data: env})
	}
	if c.Registry.Node == n.Name && n.Name != "" {
		if err := render(path.Join(UnitDir, "registry.service"), 0o644, "registry.service.tmpl", map[string]string{
			"Binary": RegistryPath, "Config": RegistryConfig, "EnvFile": RegistryEnv,
		}); err != nil {
			return nil, err
		}
		s3 := c.s3Access(v)
		data := map[string]any{
			"Addr": net.JoinHostPort(n.InternalAddress, RegistryPort), "Endpoint": s3.Endpoint, "Region": s3.Region, "Bucket": s3.Bucket,
			"Secure": strings.HasPrefix(s3.Endpoint, "https://"),
		}
		if v.RegistryTokenKey != "" {
			cert, err := registryTokenCert(v.RegistryTokenKey)
			if err != nil {
				return nil, err
			}
			files = append(files, File{Path: RegistryTokenCert, Mode: 0o644, Data: cert})
			data["Realm"], data["Service"], data["Issuer"], data["Cert"] = c.tokenRealm(), RegistryService, RegistryIssuer, RegistryTokenCert
		}
		if err := render(RegistryConfig, 0o644, "registry.yml.tmpl", data); err != nil {
			return nil, err
		}
		env, err := envFile([]kv{{"REGISTRY_STORAGE_S3_ACCESSKEY", s3.AccessKeyID}, {"REGISTRY_STORAGE_S3_SECRETKEY", s3.SecretAccessKey},
			{"REGISTRY_HTTP_SECRET", registryHTTPSecret(v)}})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", RegistryEnv, err)
		}
		files = append(files, File{Path: RegistryEnv, Mode: 0o600, Data: env})
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
		a := c.s3Access(v)
		return []kv{{"S3_ENDPOINT", a.Endpoint}, {"S3_REGION", a.Region}, {"S3_BUCKET", a.Bucket},
			{"S3_ACCESS_KEY_ID", a.AccessKeyID}, {"S3_SECRET_ACCESS_KEY", a.SecretAccessKey}}
	}
	registry := []kv{{"REGISTRY_ADDR", c.Registry.Address}}
	if c.Registry.Insecure {
		registry = append(registry, kv{"REGISTRY_INSECURE", "true"})
	}
	switch r {
	case RoleOperator:
		// The operator decrypts variables for the one node an instance is
		// placed on (nodes hold no key); its management API listens on the
		// private address the workers are given in OPERATOR_URL.
		if v.RegistryTokenKey != "" {
			// This operator is the registry's token service.
			e = append(e, kv{"REGISTRY_TOKEN_KEY", v.RegistryTokenKey}, kv{"REGISTRY_CREDENTIAL_SECRET", v.RegistryCredentialSecret})
		}
		e = append(e, kv{"MANAGEMENT_TOKEN", v.ManagementToken}, kv{"SECRETS_KEYS", v.SecretsKeys},
			kv{"OPERATOR_ADDR", net.JoinHostPort(n.InternalAddress, ManagementPort)})
		e = append(e, registry...)
		e = append(e, platform...)
	case RoleAPI:
		e = append(e, kv{"CLUSTER_TOKEN", v.ClusterToken}, kv{"SECRETS_KEYS", v.SecretsKeys})
		e = append(e, platform...)
		e = append(e, s3()...)
	case RoleWorker:
		e = append(e, kv{"CLUSTER_TOKEN", v.ClusterToken}, kv{"NODE_PROXY_TOKEN", v.NodeProxyToken}, kv{"OPERATOR_URL", c.operatorURLs()},
			kv{"NODE_INTERNAL_ADDRESS", n.AgentAddress()}, kv{"NODE_STATE_DIR", NodeStateDir},
			kv{"CLUSTER_PREFIX", c.Network.Prefix}, kv{"RUNTIME_HANDLER", runtimeHandler[n.Runtime]})
		e = append(e, registry...)
		if n.Runtime == RuntimeKata {
			e = append(e, kv{"RUNTIME_CONFIG_PATH", KataConfig})
		}
		if n.Region != "" {
			e = append(e, kv{"NODE_REGION", n.Region})
		}
	case RoleBuilder:
		e = append(e, kv{"BUILDER_ID", n.Name}, kv{"BUILDKIT_ADDR", BuildkitAddr}, kv{"BUILDER_HEALTH_ADDR", BuilderHealthAddr})
		if v.RegistryCredentialSecret != "" {
			// Each build gets credentials for its own project's repository.
			e = append(e, kv{"REGISTRY_CREDENTIAL_SECRET", v.RegistryCredentialSecret})
		}
		e = append(e, registry...)
		e = append(e, s3()...)
	case RoleEdge:
		e = append(e, kv{"NODE_PROXY_TOKEN", v.NodeProxyToken}, kv{"CERTIFICATE_KEYS", v.CertificateKeys}, kv{"ACME_EMAIL", c.Platform.ACMEEmail},
			kv{"CLOUDFLARE_API_TOKEN", v.CloudflareToken}, kv{"EDGE_ROUTES_SNAPSHOT", "/var/lib/zeitwork/edge/routes.json"})
		e = append(e, acme(c)...)
		e = append(e, platform...)
	}
	return e
}

// acme is where an edge orders its certificates, when cluster.yaml says
// otherwise than the edge's defaults (Let's Encrypt, the system's roots,
// Cloudflare's API, the system's resolvers).
func acme(c *Cluster) []kv {
	var e []kv
	if d := c.Platform.ACMEDirectory; d != "" {
		e = append(e, kv{"ACME_DIRECTORY", d})
	}
	if len(c.Platform.acmeCA) > 0 {
		e = append(e, kv{"ACME_CA_ROOTS", ACMECAFile})
	}
	if r := c.Platform.ACMEDNSResolvers; len(r) > 0 {
		e = append(e, kv{"ACME_DNS_RESOLVERS", strings.Join(r, ",")})
	}
	if u := c.Cloudflare.APIURL; u != "" {
		e = append(e, kv{"CLOUDFLARE_API_URL", u})
	}
	return e
}

// S3Access is where the cluster's bucket is and the credentials that
// open it.
type S3Access struct {
	Endpoint, Region, Bucket, AccessKeyID, SecretAccessKey string
}

// s3Access is the cluster's bucket: the existing one, or MinIO's on its
// node's internal address.
func (c *Cluster) s3Access(v Values) S3Access {
	if b := c.S3.Existing; b != nil {
		return S3Access{b.Endpoint, cmp.Or(b.Region, "us-east-1"), b.Bucket, b.AccessKeyID, v.S3SecretAccessKey}
	}
	m := c.S3.MinIO
	return S3Access{"http://" + net.JoinHostPort(c.node(m.Node).InternalAddress, MinIOPort), "us-east-1", m.Bucket, v.S3AccessKeyID, v.S3SecretAccessKey}
}

// The registry's token service as the operator runs it (internal/cli).
const (
	RegistryService = "zeitwork-registry"
	RegistryIssuer  = "zeitwork"
)

// registryTokenCert is the certificate of the token key for the
// registry's rootcertbundle. It is the same on every run (fixed validity,
// Ed25519 signatures are deterministic), so a second run writes nothing.
func registryTokenCert(seed string) ([]byte, error) {
	var k config.SigningKey
	if err := k.UnmarshalText([]byte(seed)); err != nil {
		return nil, fmt.Errorf("registry token key: %w", err)
	}
	epoch := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	svc := registryauth.Service{Issuer: RegistryIssuer, Key: k.Key(), Now: func() time.Time { return epoch }}
	return svc.Certificate()
}

// registryHTTPSecret signs the registry's upload sessions. It is derived
// from the cluster token (one way), so that every run writes the same one
// and uploads survive a restart, without another secret to keep.
func registryHTTPSecret(v Values) string {
	m := hmac.New(sha256.New, []byte(v.ClusterToken))
	m.Write([]byte("zeitwork registry http secret"))
	return hex.EncodeToString(m.Sum(nil))
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
