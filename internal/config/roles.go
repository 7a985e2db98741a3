package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"time"

	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Migrate configures `zeitwork migrate`.
type Migrate struct {
	Log      zlog.Config
	Database Database
	Timeout  time.Duration `env:"MIGRATE_TIMEOUT" envDefault:"5m"`
}

// API configures `zeitwork api`, the public API. It keeps no state of its
// own, so any number of them can serve behind a load balancer.
type API struct {
	Log      zlog.Config
	Database Database
	Addr     string `env:"API_ADDR" envDefault:":8080"`
	// Dev serves session cookies without Secure, so that a browser sends
	// them to http://localhost; never set it where the API is reachable
	// over the network.
	Dev        bool          `env:"API_DEV" envDefault:"false"`
	SessionTTL time.Duration `env:"API_SESSION_TTL" envDefault:"720h"`
	// WebDir is the dashboard's built bundle (packages/web/.output/public),
	// served under /; empty: the API serves /v1 only.
	WebDir string `env:"API_WEB_DIR"`
	GitHub GitHub
	// Platform names the URLs deployments answer at.
	Platform Platform
	// Queue takes the build tasks of deployments asked for here; the api
	// only enqueues.
	Queue Queue
	// Secrets encrypts the variables members set; without keys the
	// variable routes answer 503.
	Secrets Secrets
	// CustomDomains checks a domain's DNS when a member asks (POST
	// …/verify); Platform's names are refused as custom domains.
	CustomDomains CustomDomains
	// RateLimits and DeviceLogin: see their types.
	RateLimits  RateLimits
	DeviceLogin DeviceLogin
	// S3 keeps the archives `zeitwork deploy ./dir` uploads. It is nil
	// when S3_ENDPOINT is unset, and the upload routes then answer 503.
	S3      *S3
	Uploads Uploads
	// Cluster's token and NodeAPIPort reach the node APIs, which serve
	// instances' logs.
	Cluster     Cluster
	NodeAPIPort int `env:"NODE_API_PORT" envDefault:"8082"`
}

// enable parses S3 only when it is configured: an API without it still
// serves everything but uploads.
func (a *API) enable(environment map[string]string) {
	if environment["S3_ENDPOINT"] != "" {
		a.S3 = &S3{}
	}
}

// Operator configures `zeitwork operator`.
type Operator struct {
	Log      zlog.Config
	Database Database
	Queue    Queue
	// Addr serves the management API (/v1/images, /v1/registry/token).
	// Empty: the machine's private address (Tailscale's first, else a
	// private range's) on port 8081, never every interface.
	Addr string `env:"OPERATOR_ADDR"`
	// Management's token opens the management API (all but the registry's
	// token endpoint, which takes its own credentials).
	Management Management
	// Registry is where operators read images (downloads) and delete them.
	Registry     Registry
	RegistryAuth RegistryAuth
	// RegistryTokenKey, with REGISTRY_CREDENTIAL_SECRET, makes this
	// operator the registry's token service; both unset: no token endpoint.
	RegistryTokenKey SigningKey `env:"REGISTRY_TOKEN_KEY"`
	// Secrets decrypts projects' variables for the node agents, each for
	// the instances placed on it (GET /v1/node/instances/{id}/environment);
	// without keys that route is not served.
	Secrets         Secrets
	RetireGrace     time.Duration `env:"RETIRE_GRACE" envDefault:"5m"`
	HealthyDeadline time.Duration `env:"HEALTHY_DEADLINE" envDefault:"2m"`
	// PullDeadline is how long an instance's image may take to arrive on
	// its node; HEALTHY_DEADLINE counts from when it first started.
	PullDeadline          time.Duration `env:"PULL_DEADLINE" envDefault:"10m"`
	NodeHeartbeatDeadline time.Duration `env:"NODE_HEARTBEAT_DEADLINE" envDefault:"30s"`
	// NodeViewRefresh is how often the operator reads the node rows that
	// changed into the in-memory view placements use (node.View); 0 reads
	// every node from the table for each placement instead.
	NodeViewRefresh time.Duration `env:"OPERATOR_NODE_VIEW_REFRESH" envDefault:"1s"`
	// Platform's names are refused as custom domains, and its EdgeHost is
	// what a custom domain's CNAME must reach to be verified.
	Platform      Platform
	CustomDomains CustomDomains
}

func (o Operator) validate() []Problem {
	if o.RegistryTokenKey.Set() != (o.RegistryAuth.CredentialSecret != "") {
		return []Problem{{"REGISTRY_TOKEN_KEY", "must be set together with REGISTRY_CREDENTIAL_SECRET"}}
	}
	return nil
}

// NodeAgent configures `zeitwork nodeagent`.
type NodeAgent struct {
	Log      zlog.Config
	Database Database
	// InternalAddress is where the edge reaches this node's node-proxy
	// (host:port on the private network); it also identifies the node.
	InternalAddress string       `env:"NODE_INTERNAL_ADDRESS,required,notEmpty"`
	Region          string       `env:"NODE_REGION"`
	StateDir        string       `env:"NODE_STATE_DIR" envDefault:"/var/lib/zeitwork/nodeagent"`
	CPUMillis       int32        `env:"NODE_CPU_MILLIS"` // 0: all of the machine's CPUs
	MemoryMB        int32        `env:"NODE_MEMORY_MB"`  // 0: the machine's memory less 10%
	ClusterPrefix   netip.Prefix `env:"CLUSTER_PREFIX" envDefault:"fd7a:7765:7400::/48"`
	// Cluster's token opens the node API; NodeProxy's the node-proxy.
	Cluster   Cluster
	NodeProxy NodeProxy
	// APIAddr serves the node API and ProxyAddr the node-proxy. Empty: the
	// private address, NODE_INTERNAL_ADDRESS's host on port 8082, and
	// NODE_INTERNAL_ADDRESS itself (where the edge reaches the node-proxy).
	APIAddr   string `env:"NODEAGENT_ADDR"`
	ProxyAddr string `env:"NODEPROXY_ADDR"`
	// MaxConnsPerInstance caps the connections the node (node-proxy,
	// health checks) holds open to one instance; the next is refused. 0:
	// no cap.
	MaxConnsPerInstance int `env:"NODE_INSTANCE_MAX_CONNECTIONS" envDefault:"4096"`
	Egress              Egress
	// NodeNetns, when set, is the network namespace that plays this node
	// (several simulated workers on one machine: `zeitwork dev`). Empty in
	// production: the agent's own namespace is the node's.
	NodeNetns  string `env:"NETWORK_NODE_NETNS"`
	Containerd Containerd
	// RuntimeHandler is the containerd runtime: io.containerd.kata.v2 in
	// production, io.containerd.runc.v2 where there is no KVM.
	RuntimeHandler    string `env:"RUNTIME_HANDLER" envDefault:"io.containerd.runc.v2"`
	RuntimeConfigPath string `env:"RUNTIME_CONFIG_PATH"`
	LogDir            string `env:"INSTANCE_LOG_DIR" envDefault:"/var/log/zeitwork/instances"`
	// Instance hardening and node stability (README, "Instance hardening
	// and node stability"): see internal/runtime.Config for each.
	InstancePidsLimit int64 `env:"INSTANCE_PIDS_LIMIT" envDefault:"512"`
	InstanceTmpSizeMB int   `env:"INSTANCE_TMP_SIZE_MB" envDefault:"64"`
	// InstanceDiskLimitMB bounds what an instance writes to its own
	// filesystem; over it the instance is killed and fails, and the
	// operator replaces it (a new instance, a fresh layer). 0: no bound.
	InstanceDiskLimitMB int64  `env:"INSTANCE_DISK_LIMIT_MB" envDefault:"1024"`
	InstanceUserNS      string `env:"INSTANCE_USERNS" envDefault:"auto"` // auto, on, off
	InstanceUserNSBase  uint32 `env:"INSTANCE_USERNS_BASE" envDefault:"1073741824"`
	InstanceLogMaxSize  int64  `env:"INSTANCE_LOG_MAX_BYTES" envDefault:"10485760"`
	// InstanceStartBoost is how long after each start an instance may use
	// up to InstanceStartBoostCPUMillis instead of its own CPU limit (its
	// start is mostly CPU). 0: no boost.
	InstanceStartBoost          time.Duration `env:"INSTANCE_START_BOOST" envDefault:"10s"`
	InstanceStartBoostCPUMillis int           `env:"INSTANCE_START_BOOST_CPU_MILLIS" envDefault:"1000"`
	PullStallTimeout            time.Duration `env:"PULL_STALL_TIMEOUT" envDefault:"30s"`
	PullTimeout                 time.Duration `env:"PULL_TIMEOUT" envDefault:"10m"`
	ImageGCInterval             time.Duration `env:"IMAGE_GC_INTERVAL" envDefault:"10m"` // 0: never
	ImageGCGrace                time.Duration `env:"IMAGE_GC_GRACE" envDefault:"1h"`
	// Registry is where instances' images are pulled from.
	Registry Registry
	// OperatorURLs are the operators' management APIs (http://host:port
	// on the private network, comma-separated, tried in turn): the node
	// gets its instances' environments and its registry credential there,
	// proving itself with a credential of its own. Unset: instances with
	// variables cannot run here. The node holds no secrets key.
	OperatorURLs      []string      `env:"OPERATOR_URL" envSeparator:","`
	PollInterval      time.Duration `env:"NODE_POLL_INTERVAL" envDefault:"5s"`
	HeartbeatInterval time.Duration `env:"NODE_HEARTBEAT_INTERVAL" envDefault:"5s"`
}

func (n NodeAgent) validate() []Problem {
	for _, o := range n.OperatorURLs {
		if u, err := url.Parse(o); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return []Problem{{"OPERATOR_URL", "not a list of http:// or https:// URLs"}}
		}
	}
	if t := n.NodeProxy.Token.Reveal(); t != "" && t == n.Cluster.Token.Reveal() {
		// The edges hold the node-proxy token: the same value would let
		// every edge drive every node's API.
		return []Problem{{"NODE_PROXY_TOKEN", "must differ from CLUSTER_TOKEN"}}
	}
	if n.Registry.Insecure && n.Registry.Addr == "" {
		return []Problem{{"REGISTRY_INSECURE", "names no registry: set REGISTRY_ADDR"}}
	}
	if n.MaxConnsPerInstance < 0 {
		return []Problem{{"NODE_INSTANCE_MAX_CONNECTIONS", "must be 0 (no cap) or more"}}
	}
	switch n.InstanceUserNS {
	case "auto", "on", "off":
	default:
		return []Problem{{"INSTANCE_USERNS", fmt.Sprintf("%q is not auto, on or off", n.InstanceUserNS)}}
	}
	if n.InstanceDiskLimitMB < 0 {
		return []Problem{{"INSTANCE_DISK_LIMIT_MB", "must be 0 (no bound) or more"}}
	}
	if n.InstanceStartBoost < 0 {
		return []Problem{{"INSTANCE_START_BOOST", "must be 0 (no boost) or more"}}
	}
	if n.InstanceStartBoostCPUMillis < 10 {
		return []Problem{{"INSTANCE_START_BOOST_CPU_MILLIS", fmt.Sprintf("%d is below 10", n.InstanceStartBoostCPUMillis)}}
	}
	if n.InstancePidsLimit < 16 {
		return []Problem{{"INSTANCE_PIDS_LIMIT", fmt.Sprintf("%d is below 16", n.InstancePidsLimit)}}
	}
	if n.PullTimeout <= 0 {
		return []Problem{{"PULL_TIMEOUT", "must be positive"}}
	}
	if n.PullStallTimeout <= 0 {
		return []Problem{{"PULL_STALL_TIMEOUT", "must be positive"}}
	}
	if n.Egress.Mode == EgressNAT && n.Egress.Uplink == "" && n.NodeNetns == "" {
		return []Problem{{"NETWORK_UPLINK", `required with NODE_EGRESS=nat: the interface instances' traffic leaves by`}}
	}
	return nil
}

// Builder configures `zeitwork builder`.
type Builder struct {
	Log       zlog.Config
	Database  Database
	Queue     Queue
	S3        S3
	BuilderID string `env:"BUILDER_ID"` // default: hostname
	// HealthAddr serves GET /v1/health: 200 once the builder works its
	// queue and while its database answers, 503 otherwise (what a rollout
	// waits for after restarting it). Empty: not served.
	HealthAddr string `env:"BUILDER_HEALTH_ADDR"`
	Buildkit   Buildkit
	// Registry receives the images and the build cache.
	Registry Registry
	// RegistryAuth, when its secret is set, gives each build credentials
	// for its project's repository only, instead of REGISTRY_USERNAME/PASSWORD.
	RegistryAuth RegistryAuth
	// BaseImageMirror is the registry generated Dockerfiles pull their base
	// images through (a pull-through cache of Docker Hub in production).
	BaseImageMirror string `env:"BASE_IMAGE_MIRROR" envDefault:"docker.io"`
	// GitHub's App credentials fetch the sources of connected repositories.
	GitHub       GitHub
	BuildTimeout time.Duration `env:"BUILD_TIMEOUT" envDefault:"15m"`
	BuildLease   time.Duration `env:"BUILD_LEASE" envDefault:"30s"`
	// BuildNetwork is what buildkitd's RUN steps may reach. "isolated":
	// builds run only on a buildkitd whose RUN steps have a network
	// namespace of their own (internet only); "host": also on one that
	// gives them the host's network (local development only).
	BuildNetwork string `env:"BUILD_NETWORK" envDefault:"isolated"`
}

func (b Builder) validate() []Problem {
	var p []Problem
	if b.Registry.Addr == "" {
		p = append(p, Problem{"REGISTRY_ADDR", "required but not set"})
	}
	if b.BuildNetwork != "isolated" && b.BuildNetwork != "host" {
		p = append(p, Problem{"BUILD_NETWORK", fmt.Sprintf("%q: want isolated or host", b.BuildNetwork)})
	}
	// Builds push with credentials of their own project only; the
	// builder's own would reach every project's images.
	if b.Registry.Username != "" && b.RegistryAuth.CredentialSecret == "" {
		p = append(p, Problem{"REGISTRY_USERNAME", "builds never use the builder's own registry credentials: set REGISTRY_CREDENTIAL_SECRET (per-project credentials), or leave REGISTRY_USERNAME unset for a registry without authentication"})
	}
	return p
}

// Edge configures `zeitwork edge`.
type Edge struct {
	Log      zlog.Config
	Database Database
	Platform Platform
	// HTTPAddr serves plain HTTP: ACME HTTP-01 challenges, and a redirect to
	// HTTPS for everything else (or all traffic when Cloudflare fronts the edge).
	HTTPAddr string `env:"EDGE_HTTP_ADDR" envDefault:":80"`
	// HTTPSAddr serves TLS; "off" turns TLS off (an empty variable counts
	// as unset, so it cannot be the switch).
	HTTPSAddr string `env:"EDGE_HTTPS_ADDR" envDefault:":443"`
	// MetricsAddr serves Prometheus metrics at /metrics; "off" turns it off.
	MetricsAddr string `env:"EDGE_METRICS_ADDR" envDefault:"127.0.0.1:9101"`
	// NodeProxy's token proves the edge to the node-proxies.
	NodeProxy NodeProxy
	// CloudflareFronted: Cloudflare terminates TLS in front of the edge, so
	// the edge serves plain HTTP, trusts Cloudflare's client address and
	// scheme headers, and requests no certificates.
	CloudflareFronted bool `env:"EDGE_CLOUDFLARE_FRONTED" envDefault:"false"`
	// SnapshotPath keeps the last route table on disk, so an edge restarted
	// while the database is away still routes.
	SnapshotPath string        `env:"EDGE_ROUTES_SNAPSHOT" envDefault:"/var/lib/zeitwork/edge/routes.json"`
	PollInterval time.Duration `env:"EDGE_POLL_INTERVAL" envDefault:"30s"`
	// UpstreamTimeout bounds a request from the first byte sent to the last
	// response header received; streaming bodies run as long as they flow.
	UpstreamTimeout time.Duration `env:"EDGE_UPSTREAM_TIMEOUT" envDefault:"60s"`
	// ReadHeaderTimeout is how long a client may take to send its request
	// headers: slow-loris clients are cut off after it.
	ReadHeaderTimeout time.Duration `env:"EDGE_READ_HEADER_TIMEOUT" envDefault:"10s"`
	// IdleTimeout closes keep-alive client connections idle this long.
	IdleTimeout time.Duration `env:"EDGE_IDLE_TIMEOUT" envDefault:"120s"`
	// CertificateKeys encrypt the certificates' private keys at rest.
	CertificateKeys CertificateKeys
	// TrustedProxies are the peers whose CF-Connecting-IP and
	// X-Forwarded-Proto are believed when CloudflareFronted is set:
	// Cloudflare's published ranges by default.
	TrustedProxies []netip.Prefix `env:"EDGE_TRUSTED_PROXIES" envSeparator:"," envDefault:"173.245.48.0/20,103.21.244.0/22,103.22.200.0/22,103.31.4.0/22,141.101.64.0/18,108.162.192.0/18,190.93.240.0/20,188.114.96.0/20,197.234.240.0/22,198.41.128.0/17,162.158.0.0/15,104.16.0.0/13,104.24.0.0/14,172.64.0.0/13,131.0.72.0/22,2400:cb00::/32,2606:4700::/32,2803:f800::/32,2405:b500::/32,2405:8100::/32,2a06:98c0::/29,2c0f:f248::/32"`
	ACME           ACME
	// DataPath is how the edge forwards HTTP/1.1: "loop" (the edge's own
	// forwarding exchange on pooled connections, driven by epoll event
	// loops of its own, one per core, handing anything unusual to
	// net/http), "fast" (the same exchange on a goroutine per connection)
	// or "stdlib" (net/http's ReverseProxy for everything). It applies to
	// the plain listener when that serves the proxy itself
	// (EDGE_HTTPS_ADDR=off or Cloudflare in front), and over TLS: loop
	// runs HTTP/1.1 on the event loops after the handshake, fast on the
	// exchange's goroutines, and both serve HTTP/2 with the edge's own
	// server; stdlib is net/http for everything.
	DataPath string `env:"EDGE_DATA_PATH" envDefault:"loop"`
	// LoopSpin is how long an event loop of the loop data path keeps
	// looking for work before it parks: a loop that parks is woken by the
	// program that sends it the next event, and on a machine whose idle
	// cores sleep that wake-up costs the sender more than a short spin
	// costs the edge. 10 µs put the loop at or above nginx's rate on both
	// machines measured, on a core of its own and sharing two, for 0.9 to
	// 1.2 times nginx's CPU per request (README, "Edge data paths");
	// between polls it yields the core to any other runnable thread. 0
	// parks at once.
	LoopSpin time.Duration `env:"EDGE_LOOP_SPIN" envDefault:"10us"`
}

// maxLoopSpin bounds EDGE_LOOP_SPIN: past it a loop would hold its core
// through gaps that no wake-up saving pays for.
const maxLoopSpin = time.Millisecond

func (e Edge) validate() []Problem {
	if e.DataPath != "stdlib" && e.DataPath != "fast" && e.DataPath != "loop" {
		return []Problem{{"EDGE_DATA_PATH", fmt.Sprintf("%q is not one of stdlib, fast, loop", e.DataPath)}}
	}
	// Zero would mean no limit: slow and idle clients held forever.
	var ps []Problem
	if e.LoopSpin < 0 || e.LoopSpin > maxLoopSpin {
		ps = append(ps, Problem{"EDGE_LOOP_SPIN", fmt.Sprintf("%s is not within 0 and %s", e.LoopSpin, maxLoopSpin)})
	}
	if e.ReadHeaderTimeout <= 0 {
		ps = append(ps, Problem{"EDGE_READ_HEADER_TIMEOUT", "must be positive"})
	}
	if e.IdleTimeout <= 0 {
		ps = append(ps, Problem{"EDGE_IDLE_TIMEOUT", "must be positive"})
	}
	if e.TLS() {
		ps = append(ps, e.ACME.contactProblems()...)
	}
	return ps
}

// Off says whether an address setting turns its listener off.
func Off(addr string) bool { return addr == "" || addr == "off" }

// TLS says whether the edge terminates TLS itself (and so needs certificates).
func (e Edge) TLS() bool { return !e.CloudflareFronted && !Off(e.HTTPSAddr) }

// Dev configures `zeitwork dev`: where the local dependencies serve, and
// how the simulated platform is laid out. internal/devenv supplies the
// dependencies' endpoints as defaults (the ones scripts/deps.sh starts),
// so `zeitwork dev` runs with no variables set at all; the roles it runs
// parse their own structs from the same environment.
type Dev struct {
	Log        zlog.Config
	Database   Database
	S3         S3
	Registry   Registry
	Buildkit   Buildkit
	Containerd Containerd
	// Prefix names everything this platform owns on the host: node i is
	// <Prefix>-node<i> as network namespace, containerd namespace and
	// state directory, so two platforms on one machine never share one.
	Prefix Name `env:"DEV_PREFIX" envDefault:"zw-dev"`
	// StateDir keeps the platform's dev secrets and the simulated nodes'
	// state between runs; empty: /var/lib/zeitwork-dev/<Prefix>.
	StateDir string `env:"DEV_STATE_DIR"`
	// Nodes is how many worker nodes to simulate (each a network namespace
	// with its own node agent, /64, containerd namespace and ports).
	Nodes int `env:"DEV_NODES" envDefault:"3"`
	// DatabaseRoles runs each role as a database user of its own, a member
	// of that role's group (created with DATABASE_URL's user, which must
	// be allowed to create roles); false runs every role as that user.
	DatabaseRoles bool `env:"DEV_DATABASE_ROLES" envDefault:"true"`
	// PortBase numbers the platform's ports: the operator, edge and edge
	// metrics listen on PortBase-19..-17, node i serves its API on
	// PortBase+i and its node-proxy on PortBase+100+i.
	PortBase int `env:"DEV_PORT_BASE" envDefault:"28100"`
}

// State is the platform's state directory.
func (d Dev) State() string {
	if d.StateDir != "" {
		return d.StateDir
	}
	return "/var/lib/zeitwork-dev/" + string(d.Prefix)
}

// SecretsRotate configures `zeitwork secrets rotate`: it re-encrypts what
// is stored under older keys with the newest of each ring.
type SecretsRotate struct {
	Log             zlog.Config
	Database        Database
	Secrets         Secrets
	CertificateKeys CertificateKeys
	// BatchSize is how many rows one transaction re-encrypts.
	BatchSize int `env:"SECRETS_ROTATE_BATCH" envDefault:"100"`
}

func (s SecretsRotate) validate() []Problem {
	if s.BatchSize < 1 {
		return []Problem{{"SECRETS_ROTATE_BATCH", "must be positive"}}
	}
	return nil
}
