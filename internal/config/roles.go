package config

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Database is how a role reaches Postgres, the single source of truth.
type Database struct {
	URL      PostgresURL `env:"DATABASE_URL,required,notEmpty"`
	MaxConns int32       `env:"DATABASE_MAX_CONNS" envDefault:"10"`
}

// S3 is the object store (MinIO locally): uploaded sources, registry blobs.
type S3 struct {
	Endpoint        string `env:"S3_ENDPOINT,required,notEmpty"`
	Region          string `env:"S3_REGION" envDefault:"us-east-1"`
	Bucket          string `env:"S3_BUCKET,required,notEmpty"`
	AccessKeyID     string `env:"S3_ACCESS_KEY_ID,required,notEmpty"`
	SecretAccessKey Secret `env:"S3_SECRET_ACCESS_KEY,required,notEmpty"`
}

// Queue tunes the River task queue.
type Queue struct {
	Workers int `env:"QUEUE_WORKERS" envDefault:"10"`
	// JobTimeout bounds a task's run unless its worker sets its own.
	JobTimeout time.Duration `env:"QUEUE_JOB_TIMEOUT" envDefault:"10m"`
	// RescueAfter is how long a task may run before it is presumed dead (its
	// worker crashed) and handed to another worker.
	RescueAfter time.Duration `env:"QUEUE_RESCUE_AFTER" envDefault:"15m"`
}

// Migrate configures `zeitwork migrate`.
type Migrate struct {
	Log      zlog.Config
	Database Database
	Timeout  time.Duration `env:"MIGRATE_TIMEOUT" envDefault:"5m"`
}

// Dev configures `zeitwork dev`. Its defaults are the endpoints that
// scripts/deps.sh starts, so it runs with no variables set at all.
type Dev struct {
	LogFormat    zlog.Format `env:"LOG_FORMAT" envDefault:"text"`
	LogLevel     slog.Level  `env:"LOG_LEVEL" envDefault:"info"`
	DatabaseURL  PostgresURL `env:"DATABASE_URL" envDefault:"postgres://zeitwork:zeitwork@127.0.0.1:25432/zeitwork?sslmode=disable"`
	S3Endpoint   string      `env:"S3_ENDPOINT" envDefault:"http://127.0.0.1:29000"`
	S3Bucket     string      `env:"S3_BUCKET" envDefault:"zeitwork"`
	RegistryAddr string      `env:"REGISTRY_ADDR" envDefault:"127.0.0.1:25000"`
	BuildkitAddr string      `env:"BUILDKIT_ADDR" envDefault:"unix:///run/zeitwork-dev/buildkitd.sock"`
	Containerd   string      `env:"CONTAINERD_ADDR" envDefault:"/run/zeitwork-dev/containerd.sock"`
	S3AccessKey  string      `env:"S3_ACCESS_KEY_ID" envDefault:"zeitwork"`
	S3SecretKey  Secret      `env:"S3_SECRET_ACCESS_KEY" envDefault:"zeitwork-dev-secret"`
	// StateDir keeps the platform's dev secrets and the simulated nodes'
	// state between runs.
	StateDir string `env:"DEV_STATE_DIR" envDefault:"/var/lib/zeitwork-dev/platform"`
	// Nodes is how many worker nodes to simulate (each a network namespace
	// with its own node agent, /64, containerd namespace and ports).
	Nodes int `env:"DEV_NODES" envDefault:"3"`
	// PortBase numbers the simulated nodes' ports: node i serves its API on
	// PortBase+i and its node-proxy on PortBase+100+i.
	PortBase int `env:"DEV_PORT_BASE" envDefault:"28100"`
	// AppsDomain is where the dev edge serves apps: <project>.<AppsDomain>.
	AppsDomain string `env:"DEV_APPS_DOMAIN" envDefault:"zeitwork.localhost"`
	// RetireGrace is how long a replaced deployment keeps running.
	RetireGrace time.Duration `env:"DEV_RETIRE_GRACE" envDefault:"5m"`
	// HeartbeatDeadline is how long a simulated node may be silent before
	// the operator declares it dead; nodes heartbeat three times as often.
	HeartbeatDeadline time.Duration `env:"DEV_HEARTBEAT_DEADLINE" envDefault:"30s"`
	// NetnsPrefix names the simulated nodes' network namespaces.
	NetnsPrefix string `env:"DEV_NETNS_PREFIX" envDefault:"zw-dev-node"`
}

// The roles below are filled in by later issues; today they hold what every
// role needs, so that a missing DATABASE_URL is reported the same way now as
// it will be then.

// API configures `zeitwork api`.
type API struct {
	Log      zlog.Config
	Database Database
	Addr     string `env:"API_ADDR" envDefault:":8080"`
}

// Operator configures `zeitwork operator`.
type Operator struct {
	Log      zlog.Config
	Database Database
	Queue    Queue
	// Addr serves the management API (/v1/images, /v1/registry/token).
	Addr         string `env:"OPERATOR_ADDR" envDefault:":8081"`
	ClusterToken Secret `env:"CLUSTER_TOKEN,required,notEmpty"`
	// The registry as operators reach it: they read images (downloads)
	// and delete them.
	RegistryInsecure bool   `env:"REGISTRY_INSECURE"`
	RegistryUsername string `env:"REGISTRY_USERNAME"`
	RegistryPassword Secret `env:"REGISTRY_PASSWORD"`
	// RegistryTokenKey (base64 Ed25519 seed, 32 bytes) and
	// RegistryCredentialSecret make this operator the registry's token
	// service; both unset: no token endpoint.
	RegistryTokenKey         Secret        `env:"REGISTRY_TOKEN_KEY"`
	RegistryCredentialSecret Secret        `env:"REGISTRY_CREDENTIAL_SECRET"`
	RetireGrace              time.Duration `env:"RETIRE_GRACE" envDefault:"5m"`
	HealthyDeadline          time.Duration `env:"HEALTHY_DEADLINE" envDefault:"2m"`
	NodeHeartbeatDeadline    time.Duration `env:"NODE_HEARTBEAT_DEADLINE" envDefault:"30s"`
	// EdgeHost is what a custom domain's CNAME must reach to be verified;
	// the same variable as the edge's, so both agree.
	EdgeHost string `env:"EDGE_HOST" envDefault:"edge.zeitwork.com"`
	// AppsDomain and PlatformDomains are the platform's own names: custom
	// domains under them are refused.
	AppsDomain      string   `env:"EDGE_APPS_DOMAIN" envDefault:"zeitwork.app"`
	PlatformDomains []string `env:"EDGE_PLATFORM_DOMAINS" envSeparator:"," envDefault:"zeitwork.com,zeitwork.app,zeitwork-dns.com"`
	// DomainDNSResolver (host:port) answers custom domain checks; empty
	// uses the system's resolver.
	DomainDNSResolver string `env:"DOMAIN_DNS_RESOLVER"`
	// A pending domain is rechecked after a tenth of its age, at least
	// DomainCheckInterval and at most DomainCheckMaxInterval after the last
	// check, and given up (failed) once pending for DomainGiveUpAfter.
	DomainCheckInterval    time.Duration `env:"DOMAIN_CHECK_INTERVAL" envDefault:"30s"`
	DomainCheckMaxInterval time.Duration `env:"DOMAIN_CHECK_MAX_INTERVAL" envDefault:"15m"`
	DomainGiveUpAfter      time.Duration `env:"DOMAIN_GIVE_UP_AFTER" envDefault:"168h"`
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
	ClusterToken    Secret       `env:"CLUSTER_TOKEN,required,notEmpty"`
	APIAddr         string       `env:"NODEAGENT_ADDR" envDefault:":8082"`
	ProxyAddr       string       `env:"NODEPROXY_ADDR" envDefault:":8090"`
	// Uplink is the interface instances' egress leaves by (NAT); empty:
	// instances have no egress.
	Uplink string `env:"NETWORK_UPLINK"`
	// NodeNetns, when set, is the network namespace that plays this node
	// (several simulated workers on one machine: `zeitwork dev`). Empty in
	// production: the agent's own namespace is the node's.
	NodeNetns      string `env:"NETWORK_NODE_NETNS"`
	ContainerdAddr string `env:"CONTAINERD_ADDR" envDefault:"/run/containerd/containerd.sock"`
	Namespace      string `env:"CONTAINERD_NAMESPACE" envDefault:"zeitwork"`
	// RuntimeHandler is the containerd runtime: io.containerd.kata.v2 in
	// production, io.containerd.runc.v2 where there is no KVM.
	RuntimeHandler    string        `env:"RUNTIME_HANDLER" envDefault:"io.containerd.runc.v2"`
	RuntimeConfigPath string        `env:"RUNTIME_CONFIG_PATH"`
	Snapshotter       string        `env:"CONTAINERD_SNAPSHOTTER"`
	LogDir            string        `env:"INSTANCE_LOG_DIR" envDefault:"/var/log/zeitwork/instances"`
	RegistryUsername  string        `env:"REGISTRY_USERNAME"`
	RegistryPassword  Secret        `env:"REGISTRY_PASSWORD"`
	PlainHTTP         []string      `env:"REGISTRY_PLAIN_HTTP"` // registry hosts spoken to without TLS (dev only)
	SecretsKeys       string        `env:"SECRETS_KEYS"`        // see internal/secret; needed for projects with variables
	PollInterval      time.Duration `env:"NODE_POLL_INTERVAL" envDefault:"5s"`
	HeartbeatInterval time.Duration `env:"NODE_HEARTBEAT_INTERVAL" envDefault:"5s"`
}

// Builder configures `zeitwork builder`.
type Builder struct {
	Log          zlog.Config
	Database     Database
	Queue        Queue
	S3           S3
	BuilderID    string `env:"BUILDER_ID"` // default: hostname
	BuildkitAddr string `env:"BUILDKIT_ADDR,required,notEmpty"`
	RegistryAddr string `env:"REGISTRY_ADDR,required,notEmpty"`
	// RegistryInsecure speaks plain HTTP to the registry (dev only).
	RegistryInsecure bool   `env:"REGISTRY_INSECURE"`
	RegistryUsername string `env:"REGISTRY_USERNAME"`
	RegistryPassword Secret `env:"REGISTRY_PASSWORD"`
	// RegistryCredentialSecret, when set, is the registry token service's
	// credential key: each build then gets credentials for its project's
	// repository only, instead of REGISTRY_USERNAME/PASSWORD.
	RegistryCredentialSecret Secret `env:"REGISTRY_CREDENTIAL_SECRET"`
	// BaseImageMirror is the registry generated Dockerfiles pull their base
	// images through (a pull-through cache of Docker Hub in production).
	BaseImageMirror  string        `env:"BASE_IMAGE_MIRROR" envDefault:"docker.io"`
	GitHubAppID      int64         `env:"GITHUB_APP_ID"`
	GitHubPrivateKey Secret        `env:"GITHUB_APP_PRIVATE_KEY"`
	GitHubAPIURL     string        `env:"GITHUB_API_URL"`
	BuildTimeout     time.Duration `env:"BUILD_TIMEOUT" envDefault:"15m"`
	BuildLease       time.Duration `env:"BUILD_LEASE" envDefault:"30s"`
}

// Edge configures `zeitwork edge`.
type Edge struct {
	Log      zlog.Config
	Database Database
	// HTTPAddr serves plain HTTP: ACME HTTP-01 challenges, and a redirect to
	// HTTPS for everything else (or all traffic when Cloudflare fronts the edge).
	HTTPAddr string `env:"EDGE_HTTP_ADDR" envDefault:":80"`
	// HTTPSAddr serves TLS; "off" turns TLS off (an empty variable counts
	// as unset, so it cannot be the switch).
	HTTPSAddr string `env:"EDGE_HTTPS_ADDR" envDefault:":443"`
	// MetricsAddr serves Prometheus metrics at /metrics; "off" turns it off.
	MetricsAddr string `env:"EDGE_METRICS_ADDR" envDefault:"127.0.0.1:9101"`
	// AppsDomain hosts <project>.<AppsDomain> and <deployment-id>.<AppsDomain>.
	AppsDomain string `env:"EDGE_APPS_DOMAIN" envDefault:"zeitwork.app"`
	// Host is the name custom domains point their CNAME at.
	Host string `env:"EDGE_HOST" envDefault:"edge.zeitwork.com"`
	// ClusterToken proves the edge to the node-proxies.
	ClusterToken Secret `env:"CLUSTER_TOKEN,required,notEmpty"`
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
	// TrustedProxies are the peers whose CF-Connecting-IP and
	// X-Forwarded-Proto are believed when CloudflareFronted is set:
	// Cloudflare's published ranges by default.
	TrustedProxies []netip.Prefix `env:"EDGE_TRUSTED_PROXIES" envSeparator:"," envDefault:"173.245.48.0/20,103.21.244.0/22,103.22.200.0/22,103.31.4.0/22,141.101.64.0/18,108.162.192.0/18,190.93.240.0/20,188.114.96.0/20,197.234.240.0/22,198.41.128.0/17,162.158.0.0/15,104.16.0.0/13,104.24.0.0/14,172.64.0.0/13,131.0.72.0/22,2400:cb00::/32,2606:4700::/32,2803:f800::/32,2405:b500::/32,2405:8100::/32,2a06:98c0::/29,2c0f:f248::/32"`
	ACME           ACME
}

// Off says whether an address setting turns its listener off.
func Off(addr string) bool { return addr == "" || addr == "off" }

// TLS says whether the edge terminates TLS itself (and so needs certificates).
func (e Edge) TLS() bool { return !e.CloudflareFronted && !Off(e.HTTPSAddr) }

// ACME is where the edge gets certificates: wildcards for the platform
// domains by DNS-01 through Cloudflare, and on demand for verified custom
// domains by HTTP-01/TLS-ALPN-01.
type ACME struct {
	// Directory is the ACME server; Let's Encrypt production by default.
	Directory string `env:"ACME_DIRECTORY" envDefault:"https://acme-v02.api.letsencrypt.org/directory"`
	Email     string `env:"ACME_EMAIL"`
	// CARoots is a PEM file of roots to trust for the ACME server itself
	// (a private CA such as Pebble's); empty trusts the system roots.
	CARoots string `env:"ACME_CA_ROOTS"`
	// PlatformDomains get wildcard certificates (*.d and d) by DNS-01.
	PlatformDomains []string `env:"EDGE_PLATFORM_DOMAINS" envSeparator:"," envDefault:"zeitwork.com,zeitwork.app,zeitwork-dns.com"`
	// CloudflareToken is the API token DNS-01 uses; without it no wildcard
	// certificates are requested.
	CloudflareToken Secret `env:"CLOUDFLARE_API_TOKEN"`
	// CloudflareAPI is Cloudflare's API base (an emulator in tests).
	CloudflareAPI string `env:"CLOUDFLARE_API_URL" envDefault:"https://api.cloudflare.com/client/v4"`
	// Resolvers check DNS-01 propagation (host:port); empty uses the system's.
	Resolvers []string `env:"ACME_DNS_RESOLVERS" envSeparator:","`
}
