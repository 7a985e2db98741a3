package bootstrap

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/certmagic"
	"go.yaml.in/yaml/v3"
)

// Cluster is cluster.yaml: the whole platform, declared. Secrets are never
// in it: fields ending in _env name an environment variable of the process
// running bootstrap, read when it runs, so the file can be committed.
type Cluster struct {
	Platform   Platform   `yaml:"platform"`
	Cloudflare Cloudflare `yaml:"cloudflare"`
	Postgres   Postgres   `yaml:"postgres"`
	S3         S3         `yaml:"s3"`
	SSH        SSH        `yaml:"ssh"`
	Secrets    Secrets    `yaml:"secrets"`
	Network    Network    `yaml:"network"`
	Registry   Registry   `yaml:"registry"`
	Release    Release    `yaml:"release"`
	Tailscale  *Tailscale `yaml:"tailscale,omitempty"`
	Nodes      []Node     `yaml:"nodes"`

	// dir is where the file is: relative paths in it are relative to it.
	dir string
}

// Platform is what the public sees.
type Platform struct {
	// Domains are the platform's own domains; each gets a certificate for
	// itself and its wildcard (zeitwork.com and *.zeitwork.com).
	Domains    []string `yaml:"domains"`
	AppsDomain string   `yaml:"apps_domain"` // <project>.<apps_domain>; one of Domains
	EdgeHost   string   `yaml:"edge_host"`   // what customers CNAME to
	ACMEEmail  string   `yaml:"acme_email"`
	// ACMEDirectory is the ACME server the edges order certificates from
	// (ACME_DIRECTORY); default Let's Encrypt's production directory.
	ACMEDirectory string `yaml:"acme_directory"`
	// ACMECA is the root the edges trust for ACMEDirectory when a private
	// CA runs it (step-ca, Pebble): a PEM file's path, or the PEM itself.
	// It is read when the cluster file is loaded and written to every edge
	// (ACME_CA_ROOTS); unset, the system's roots.
	ACMECA string `yaml:"acme_ca"`
	// ACMEDNSResolvers (host:port) check that DNS-01 records have
	// propagated (ACME_DNS_RESOLVERS); default the edge's own resolvers.
	ACMEDNSResolvers []string `yaml:"acme_dns_resolvers"`

	// acmeCA is ACMECA's PEM, read by validate.
	acmeCA []byte
}

// Cloudflare holds the DNS the certificates are proved through.
type Cloudflare struct {
	APITokenEnv string `yaml:"api_token_env"`
	// APIURL is Cloudflare's API base (CLOUDFLARE_API_URL); default
	// https://api.cloudflare.com/client/v4. Another one is a proxy or an
	// emulator.
	APIURL string `yaml:"api_url"`
}

// Postgres is an existing database (managed or not); bootstrap migrates it.
type Postgres struct {
	URLEnv string `yaml:"url_env"`
	// RoleUsers, when set, gives each role a database user of its own
	// with its role's grants only; unset, every role connects as URLEnv's
	// user, which owns the schema.
	RoleUsers *RoleUsers `yaml:"role_users,omitempty"`
}

// RoleUsers are the roles' database users: <Prefix>_<role> (zw_nodeagent),
// each a member of its role's group (internal/dbrole), made by bootstrap
// with URLEnv's user, which must be allowed to create roles. Passwords are
// derived from the key in PasswordKeyEnv, so that every run agrees on
// them without storing them anywhere.
type RoleUsers struct {
	Prefix         string `yaml:"prefix"` // default zw
	PasswordKeyEnv string `yaml:"password_key_env"`
}

// S3 is where sources and images are kept: an existing bucket, or MinIO
// started on one of the nodes.
type S3 struct {
	Existing *S3Bucket `yaml:"existing,omitempty"`
	MinIO    *MinIO    `yaml:"minio,omitempty"`
}

// S3Bucket is a bucket that already exists.
type S3Bucket struct {
	Endpoint           string `yaml:"endpoint"`
	Region             string `yaml:"region"`
	Bucket             string `yaml:"bucket"`
	AccessKeyID        string `yaml:"access_key_id"`
	SecretAccessKeyEnv string `yaml:"secret_access_key_env"`
}

// MinIO runs on a node of the cluster.
type MinIO struct {
	Node        string `yaml:"node"` // a node's name
	Bucket      string `yaml:"bucket"`
	RootUserEnv string `yaml:"root_user_env"`
	RootPassEnv string `yaml:"root_password_env"`
}

// SSH is how bootstrap reaches the machines.
type SSH struct {
	User       string `yaml:"user"`        // default root
	PrivateKey string `yaml:"private_key"` // path; relative to cluster.yaml
	// Generate creates PrivateKey (Ed25519) when it does not exist.
	Generate bool `yaml:"generate"`
	// KnownHosts records each machine's host key on first contact; default
	// cluster.known_hosts next to cluster.yaml.
	KnownHosts string `yaml:"known_hosts"`
}

// Secrets are the platform's shared secrets, by environment reference.
type Secrets struct {
	ClusterTokenEnv    string `yaml:"cluster_token_env"`    // CLUSTER_TOKEN: the node API's (api, workers)
	NodeProxyTokenEnv  string `yaml:"node_proxy_token_env"` // NODE_PROXY_TOKEN: the node-proxies' (edges, workers)
	ManagementTokenEnv string `yaml:"management_token_env"` // MANAGEMENT_TOKEN: the management API's (operators)
	KeysEnv            string `yaml:"keys_env"`             // SECRETS_KEYS: id:base64,… (api, operators)
	// CERTIFICATE_KEYS (edges): seals certificates' private keys at rest,
	// in SECRETS_KEYS' format but its own ring, so that an edge holds no
	// key to project variables.
	CertificateKeysEnv string `yaml:"certificate_keys_env"`
	// The registry's token service (internal/registryauth), both or
	// neither: REGISTRY_TOKEN_KEY (operators: a base64 32-byte Ed25519
	// seed that signs registry tokens) and REGISTRY_CREDENTIAL_SECRET
	// (operators and builders: signs the per-project and per-node
	// credentials). With registry.node, the registry then trusts only
	// tokens signed by that key.
	RegistryTokenKeyEnv         string `yaml:"registry_token_key_env"`
	RegistryCredentialSecretEnv string `yaml:"registry_credential_secret_env"`
}

// Network is the cluster's addressing.
type Network struct {
	// Prefix is the cluster's IPv6 /48; each worker gets a /64 of it.
	Prefix string `yaml:"prefix"`
}

// Registry is the OCI registry builds are pushed to and workers pull from:
// an existing one at Address, or one bootstrap runs on Node.
type Registry struct {
	Address string `yaml:"address"` // host:port; default <node's internal_address>:5000 with node
	// Node runs the distribution registry (release.registry), storing into
	// the cluster's S3 bucket under /registry. It speaks plain HTTP on the
	// node's internal address, so Insecure is implied.
	Node string `yaml:"node"`
	// Insecure: the registry speaks plain HTTP (REGISTRY_INSECURE).
	Insecure bool `yaml:"insecure"`
	// TokenRealm is where clients of registry.node get tokens (with
	// secrets.registry_token_key_env); default the first operator's
	// management API, http://<internal_address>:8081/v1/registry/token.
	TokenRealm string `yaml:"token_realm"`
}

// Release is what bootstrap installs: the zeitwork binary on every node,
// and the third-party daemons on the nodes that run them. Paths are
// relative to cluster.yaml. Every file is written to a temporary file,
// checksum-verified and renamed into place.
type Release struct {
	Binary string `yaml:"binary"` // the zeitwork linux binary
	// LogWriter is the zeitwork-logwriter binary of the same build
	// (cmd/zeitwork-logwriter), installed next to the zeitwork binary on
	// workers: the process each instance's shim starts for its output.
	// Unset, the zeitwork binary is the writer, at about 6 ms more CPU per
	// instance start.
	LogWriter string `yaml:"logwriter"`
	// Buildkitd and Buildctl are BuildKit's binaries for builder nodes;
	// unset, buildkitd must already be in /usr/local/bin.
	Buildkitd string `yaml:"buildkitd"`
	Buildctl  string `yaml:"buildctl"`
	// CNIPlugins is a directory holding the bridge, host-local and loopback
	// CNI plugins of builds' RUN network (containernetworking/plugins
	// 1.4+, whose bridge knows portIsolation); unset, the distribution's
	// containernetworking-plugins package is used.
	CNIPlugins string `yaml:"cni_plugins"`
	MinIO      string `yaml:"minio"`    // the minio server binary, with s3.minio
	Registry   string `yaml:"registry"` // the distribution registry binary, with registry.node
	// Kata is the Kata Containers static release tarball (its paths under
	// opt/kata), for runtime: kata workers; unset, it must already be in
	// /opt/kata.
	Kata string `yaml:"kata"`
	// Checksums is a SHA256SUMS file (sha256sum's format, as releases
	// publish it): when set, every file above must be listed in it, by its
	// base name, with its digest, or nothing is changed.
	Checksums string `yaml:"checksums"`
	// Tailscaled and Tailscale are the tailscaled and tailscale linux
	// binaries, installed like Binary when tailscale is set; without them
	// the nodes get Tailscale's apt package.
	Tailscaled string `yaml:"tailscaled"`
	Tailscale  string `yaml:"tailscale"`
}

// Tailscale joins the nodes to a tailnet (optional).
type Tailscale struct {
	AuthKeyEnv string `yaml:"auth_key_env"`
	Tailnet    string `yaml:"tailnet"`
	// LoginServer is the control server (Headscale's URL); default
	// Tailscale's.
	LoginServer string `yaml:"login_server"`
	// Userspace runs tailscaled without a TUN device, for machines that
	// have none: the node's tailnet address is then tailscaled's own, not
	// the kernel's, so nothing can bind it and the roles cannot use it as
	// their internal address.
	Userspace bool `yaml:"userspace"`
}

// Node is one machine.
type Node struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"` // host or host:port, where SSH reaches it
	// InternalAddress is how other nodes reach it (the private network);
	// default: Address's host. Recorded nodes are matched by it.
	InternalAddress string  `yaml:"internal_address"`
	Roles           []Role  `yaml:"roles"`
	Runtime         Runtime `yaml:"runtime"` // workers only; default runc
	OS              OS      `yaml:"os"`      // default debian
	Region          string  `yaml:"region"`

	// addressFromTailnet: no internal_address was given and the node is
	// on the tailnet, so its internal address is its tailnet address,
	// known once it has joined (see tailscale.go).
	addressFromTailnet bool
}

// Role is what a node runs.
type Role string

const (
	RoleOperator Role = "operator"
	RoleWorker   Role = "worker"
	RoleBuilder  Role = "builder"
	RoleEdge     Role = "edge"
	RoleAPI      Role = "api"
)

var roles = []Role{RoleOperator, RoleWorker, RoleBuilder, RoleEdge, RoleAPI}

// minimum is how many nodes each role needs: three operators and three
// workers so that one can be lost (or upgraded) while the rest go on.
var minimum = map[Role]int{RoleOperator: 3, RoleWorker: 3, RoleBuilder: 1, RoleEdge: 1, RoleAPI: 1}

// Runtime is the containerd runtime handler a worker runs instances with.
type Runtime string

const (
	RuntimeRunc Runtime = "runc"
	RuntimeKata Runtime = "kata"
)

// OS is the node's distribution; what differs between them is in distro.go.
type OS string

const (
	OSDebian OS = "debian"
	OSUbuntu OS = "ubuntu"
)

// NodeProxyPort is where a worker's node-proxy listens (NODEPROXY_ADDR's
// default); host:port of it is the worker's NODE_INTERNAL_ADDRESS, the
// key the nodes table records it under.
const NodeProxyPort = "8090"

// AgentAddress is the worker's address as the nodes table records it.
func (n Node) AgentAddress() string { return net.JoinHostPort(n.InternalAddress, NodeProxyPort) }

// Has says whether the node runs role.
func (n Node) Has(r Role) bool { return slices.Contains(n.Roles, r) }

// FieldError is one problem in cluster.yaml, at its field path.
type FieldError struct {
	Path string // nodes[3].address
	Msg  string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Msg }

// Errors are all the problems found in a file.
type Errors []FieldError

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// ErrInvalid marks a cluster.yaml that cannot be used.
var ErrInvalid = errors.New("invalid cluster file")

// Load reads and validates the cluster file at p.
func Load(p string) (*Cluster, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("cluster file: %w", err)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, err
	}
	c, err := parse(raw, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return c, nil
}

// Parse decodes and validates a cluster file. Unknown fields are refused:
// a misspelt key would otherwise silently take its default. Relative
// paths in it are relative to the working directory.
func Parse(raw []byte) (*Cluster, error) { return parse(raw, "") }

// parse is Parse for a file in dir: the files the cluster file names
// (platform.acme_ca) are read relative to it.
func parse(raw []byte, dir string) (*Cluster, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	c := Cluster{dir: dir}
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the file is empty", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	c.defaults()
	if errs := c.validate(); len(errs) > 0 {
		return nil, fmt.Errorf("%w:\n%w", ErrInvalid, errs)
	}
	return &c, nil
}

func (c *Cluster) defaults() {
	if u := c.Postgres.RoleUsers; u != nil && u.Prefix == "" {
		u.Prefix = "zw"
	}
	if c.SSH.User == "" {
		c.SSH.User = "root"
	}
	if c.SSH.KnownHosts == "" {
		c.SSH.KnownHosts = "cluster.known_hosts"
	}
	if c.Network.Prefix == "" {
		c.Network.Prefix = "fd7a:7765:7400::/48"
	}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		if n.InternalAddress == "" && c.Tailscale != nil && !c.Tailscale.Userspace {
			n.addressFromTailnet = true
		} else if n.InternalAddress == "" {
			n.InternalAddress = hostOf(n.Address)
		}
		if n.Name == c.Registry.Node && c.Registry.Node != "" {
			if c.Registry.Address == "" {
				c.Registry.Address = net.JoinHostPort(n.InternalAddress, RegistryPort)
			}
			c.Registry.Insecure = true
		}
		if n.OS == "" {
			n.OS = OSDebian
		}
		if n.Runtime == "" && n.Has(RoleWorker) {
			n.Runtime = RuntimeRunc
		}
	}
}

// Path resolves a path given in the file against the file's directory.
func (c *Cluster) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// ClusterPrefix is the parsed network prefix.
func (c *Cluster) ClusterPrefix() netip.Prefix { return netip.MustParsePrefix(c.Network.Prefix) }

var (
	envNameRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	nodeNameRe   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	domainRe     = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	userPrefixRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
)

func (c *Cluster) validate() Errors {
	var errs Errors
	bad := func(path, format string, args ...any) {
		errs = append(errs, FieldError{path, fmt.Sprintf(format, args...)})
	}
	env := func(path, name string, required bool) {
		switch {
		case name == "" && required:
			bad(path, "required: the name of the environment variable that holds it")
		case name != "" && !envNameRe.MatchString(name):
			bad(path, "%q is not an environment variable name (the secret itself never goes in this file)", name)
		}
	}

	if len(c.Platform.Domains) == 0 {
		bad("platform.domains", "required: at least one domain, e.g. zeitwork.com")
	}
	for i, d := range c.Platform.Domains {
		if !domainRe.MatchString(d) {
			bad(fmt.Sprintf("platform.domains[%d]", i), "%q is not a domain name (write zeitwork.com; the wildcard is implied)", d)
		}
		if slices.Index(c.Platform.Domains, d) != i {
			bad(fmt.Sprintf("platform.domains[%d]", i), "%q is listed twice", d)
		}
	}
	if c.Platform.AppsDomain == "" {
		bad("platform.apps_domain", "required: the domain projects get names under")
	} else if !slices.Contains(c.Platform.Domains, c.Platform.AppsDomain) {
		bad("platform.apps_domain", "%q is not one of platform.domains", c.Platform.AppsDomain)
	}
	if c.Platform.EdgeHost == "" {
		bad("platform.edge_host", "required: the host customers point their CNAMEs at")
	} else if !domainRe.MatchString(c.Platform.EdgeHost) {
		bad("platform.edge_host", "%q is not a host name", c.Platform.EdgeHost)
	}
	if c.Platform.ACMEEmail == "" || !strings.Contains(c.Platform.ACMEEmail, "@") {
		bad("platform.acme_email", "required: an email address for the ACME account")
	}
	if d := c.Platform.ACMEDirectory; d != "" {
		// RFC 8555 §6.1: ACME is spoken over HTTPS only.
		if u, err := url.Parse(d); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("platform.acme_directory", "%q is not an https:// URL (an ACME server's directory, e.g. https://acme-staging-v02.api.letsencrypt.org/directory)", d)
		}
	}
	if c.Platform.ACMECA != "" {
		if c.Platform.ACMEDirectory == "" {
			bad("platform.acme_ca", "set with platform.acme_directory only: it is the root the edges trust for that ACME server")
		} else if pem, err := readCA(c.Platform.ACMECA, c.Path); err != nil {
			bad("platform.acme_ca", "%v", err)
		} else {
			c.Platform.acmeCA = pem
		}
	}
	for i, r := range c.Platform.ACMEDNSResolvers {
		if _, port, err := net.SplitHostPort(r); err != nil || port == "" || checkAddress(r) != nil {
			bad(fmt.Sprintf("platform.acme_dns_resolvers[%d]", i), "%q is not host:port of a DNS server, e.g. 1.1.1.1:53", r)
		}
	}
	if a := c.Cloudflare.APIURL; a != "" {
		if u, err := url.Parse(a); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("cloudflare.api_url", "%q is not an http:// or https:// URL", a)
		}
	}
	env("cloudflare.api_token_env", c.Cloudflare.APITokenEnv, true)
	env("postgres.url_env", c.Postgres.URLEnv, true)
	env("secrets.cluster_token_env", c.Secrets.ClusterTokenEnv, true)
	env("secrets.node_proxy_token_env", c.Secrets.NodeProxyTokenEnv, true)
	env("secrets.management_token_env", c.Secrets.ManagementTokenEnv, true)
	if u := c.Postgres.RoleUsers; u != nil {
		env("postgres.role_users.password_key_env", u.PasswordKeyEnv, true)
		if !userPrefixRe.MatchString(u.Prefix) {
			bad("postgres.role_users.prefix", "%q is not a prefix: up to 32 lower-case letters, digits and underscores, starting with a letter", u.Prefix)
		}
	}
	env("secrets.keys_env", c.Secrets.KeysEnv, true)
	env("secrets.certificate_keys_env", c.Secrets.CertificateKeysEnv, true)
	env("secrets.registry_token_key_env", c.Secrets.RegistryTokenKeyEnv, c.Secrets.RegistryCredentialSecretEnv != "")
	env("secrets.registry_credential_secret_env", c.Secrets.RegistryCredentialSecretEnv, c.Secrets.RegistryTokenKeyEnv != "")
	if c.Registry.TokenRealm != "" && c.Secrets.RegistryTokenKeyEnv == "" {
		bad("registry.token_realm", "set with secrets.registry_token_key_env only")
	}
	if realm := c.tokenRealm(); c.Registry.Node != "" && c.Secrets.RegistryTokenKeyEnv != "" && realm != "" {
		u, err := url.Parse(realm)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("registry.token_realm", "%q is not an http:// or https:// URL", realm)
		case u.Host != c.Registry.Address && isPrivateIP(u.Hostname()):
			// go-containerregistry (the operators' and builders' client)
			// refuses a realm at a private IP literal other than the
			// registry's own host.
			bad("registry.token_realm", "%q is at a private IP address, which registry clients refuse: give the operators host names (internal_address, e.g. their tailnet names) or set registry.token_realm", realm)
		}
	}

	switch {
	case c.S3.Existing == nil && c.S3.MinIO == nil:
		bad("s3", "required: either existing (a bucket you have) or minio (started on a node)")
	case c.S3.Existing != nil && c.S3.MinIO != nil:
		bad("s3", "existing and minio are exclusive: choose one")
	case c.S3.Existing != nil:
		b := c.S3.Existing
		if b.Endpoint == "" {
			bad("s3.existing.endpoint", "required")
		}
		if b.Bucket == "" {
			bad("s3.existing.bucket", "required")
		}
		if b.AccessKeyID == "" {
			bad("s3.existing.access_key_id", "required")
		}
		env("s3.existing.secret_access_key_env", b.SecretAccessKeyEnv, true)
	case c.S3.MinIO != nil:
		m := c.S3.MinIO
		if !slices.ContainsFunc(c.Nodes, func(n Node) bool { return n.Name == m.Node }) {
			bad("s3.minio.node", "%q is not the name of a node", m.Node)
		}
		if m.Bucket == "" {
			bad("s3.minio.bucket", "required")
		}
		env("s3.minio.root_user_env", m.RootUserEnv, true)
		env("s3.minio.root_password_env", m.RootPassEnv, true)
	}

	if c.SSH.PrivateKey == "" {
		bad("ssh.private_key", "required: the path of the key (set generate: true to create it)")
	}
	if rn := c.Registry.Node; rn != "" {
		if !slices.ContainsFunc(c.Nodes, func(n Node) bool { return n.Name == rn }) {
			bad("registry.node", "%q is not the name of a node", rn)
		}
		if c.Release.Registry == "" {
			bad("release.registry", "required with registry.node: the path of the distribution registry binary to install")
		}
	}
	if err := checkAddress(c.Registry.Address); c.Registry.Address == "" || err != nil {
		bad("registry.address", "required: host:port of the registry builds are pushed to (or registry.node)")
	}
	if c.Release.Binary == "" {
		bad("release.binary", "required: the path of the zeitwork linux binary to install")
	}
	if c.S3.MinIO != nil && c.Release.MinIO == "" {
		bad("release.minio", "required with s3.minio: the path of the minio server binary to install")
	}
	if c.Release.Buildctl != "" && c.Release.Buildkitd == "" {
		bad("release.buildctl", "set with release.buildkitd only")
	}
	if p, err := netip.ParsePrefix(c.Network.Prefix); err != nil || !p.Addr().Is6() || p.Bits() > 56 || p.Masked() != p {
		bad("network.prefix", "%q is not an IPv6 prefix of /56 or wider, e.g. fd7a:7765:7400::/48", c.Network.Prefix)
	}
	if t := c.Tailscale; t != nil {
		env("tailscale.auth_key_env", t.AuthKeyEnv, true)
	}
	c.validateTailscale(bad)

	count := map[Role]int{}
	names, addrs, internal := map[string]int{}, map[string]int{}, map[string]int{}
	for i, n := range c.Nodes {
		at := func(f string) string { return fmt.Sprintf("nodes[%d].%s", i, f) }
		if !nodeNameRe.MatchString(n.Name) {
			bad(at("name"), "%q is not a node name (lower-case letters, digits and -)", n.Name)
		} else if j, dup := names[n.Name]; dup {
			bad(at("name"), "%q is also the name of nodes[%d]", n.Name, j)
		} else {
			names[n.Name] = i
		}
		if n.Address == "" {
			bad(at("address"), "required: where SSH reaches the machine")
		} else if err := checkAddress(n.Address); err != nil {
			bad(at("address"), "%v", err)
		} else if j, dup := addrs[canonicalAddress(n.Address)]; dup {
			bad(at("address"), "%q is also the address of nodes[%d]", n.Address, j)
		} else {
			addrs[canonicalAddress(n.Address)] = i
		}
		if n.InternalAddress != "" {
			if _, err := netip.ParseAddr(n.InternalAddress); err != nil && !domainRe.MatchString(n.InternalAddress) {
				bad(at("internal_address"), "%q is neither an IP address nor a host name", n.InternalAddress)
			} else if j, dup := internal[n.InternalAddress]; dup {
				bad(at("internal_address"), "%q is also the internal address of nodes[%d]", n.InternalAddress, j)
			} else {
				internal[n.InternalAddress] = i
			}
		}
		if len(n.Roles) == 0 {
			bad(at("roles"), "required: one or more of %v", roles)
		}
		for k, r := range n.Roles {
			if !slices.Contains(roles, r) {
				bad(fmt.Sprintf("nodes[%d].roles[%d]", i, k), "%q is not a role (one of %v)", r, roles)
			} else if slices.Index(n.Roles, r) != k {
				bad(fmt.Sprintf("nodes[%d].roles[%d]", i, k), "%q is listed twice", r)
			} else {
				count[r]++
			}
		}
		switch {
		case n.Has(RoleWorker) && n.Runtime != RuntimeRunc && n.Runtime != RuntimeKata:
			bad(at("runtime"), "%q is not a runtime handler (runc or kata)", n.Runtime)
		case !n.Has(RoleWorker) && n.Runtime != "":
			bad(at("runtime"), "only workers run instances; this node is not a worker")
		}
		if n.OS != OSDebian && n.OS != OSUbuntu {
			bad(at("os"), "%q is not supported (debian or ubuntu)", n.OS)
		}
	}
	if len(c.Nodes) == 0 {
		bad("nodes", "required: the machines of the cluster")
	} else {
		for _, r := range roles {
			if count[r] < minimum[r] {
				bad("nodes", "%d node(s) with role %s, need at least %d", count[r], r, minimum[r])
			}
		}
	}
	return errs
}

// tokenRealm is the registry's auth.token.realm, "" without operators.
func (c *Cluster) tokenRealm() string {
	if c.Registry.TokenRealm != "" {
		return c.Registry.TokenRealm
	}
	for _, n := range c.Nodes {
		if n.Has(RoleOperator) {
			return "http://" + net.JoinHostPort(n.InternalAddress, ManagementPort) + "/v1/registry/token"
		}
	}
	return ""
}

// acmeDirectory is the ACME server the edges use: the edge's default
// (config.ACME) unless acme_directory says otherwise.
func (p Platform) acmeDirectory() string {
	return cmp.Or(p.ACMEDirectory, certmagic.LetsEncryptProductionCA)
}

// readCA is platform.acme_ca's PEM: the value itself when it is PEM, else
// the file it names. It must hold at least one certificate, and nothing
// else: a private key pasted by mistake is refused, not sent to the edges.
func readCA(v string, path func(string) string) ([]byte, error) {
	raw := []byte(v)
	if !strings.HasPrefix(strings.TrimSpace(v), "-----BEGIN") {
		var err error
		if raw, err = os.ReadFile(path(v)); err != nil {
			return nil, fmt.Errorf("neither PEM nor a readable file: %w", err)
		}
	}
	n := 0
	for rest := raw; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a %s block: only the CA's certificates belong here", b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return nil, errors.New("holds no PEM certificate")
	}
	return raw, nil
}

func isPrivateIP(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && (ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast())
}

func checkAddress(a string) error {
	host := a
	if h, port, err := net.SplitHostPort(a); err == nil {
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("%q has no valid port", a)
		}
		host = h
	}
	if _, err := netip.ParseAddr(host); err != nil && !domainRe.MatchString(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", a)
	}
	return nil
}

// canonicalAddress is host:port with the default port, so that "10.0.0.1"
// and "10.0.0.1:22" are seen as the same machine.
func canonicalAddress(a string) string {
	if _, _, err := net.SplitHostPort(a); err == nil {
		return a
	}
	return net.JoinHostPort(a, "22")
}

func hostOf(a string) string {
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return a
}
