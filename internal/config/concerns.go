package config

import (
	"fmt"
	"net/mail"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/zeitwork/zeitwork/internal/ratelimit"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// The structs in this file are one concern each. A role embeds those it
// needs, so every variable is declared once and means the same to every
// role that reads it.

// Database is how a role reaches Postgres, the single source of truth.
type Database struct {
	URL      PostgresURL `env:"DATABASE_URL,required,notEmpty"`
	MaxConns int32       `env:"DATABASE_MAX_CONNS" envDefault:"10"`
}

// Secrets is the key ring projects' variables are encrypted with at rest
// (see internal/secret): the API encrypts, operators decrypt for the node
// an instance is placed on, so both must hold the same keys. Nodes hold
// none.
type Secrets struct {
	// Keys is nil when SECRETS_KEYS is unset.
	Keys *secret.Ring `env:"SECRETS_KEYS"`
}

// CertificateKeys is the key ring the edge encrypts certificates' private
// keys with at rest (internal/certs). It is not SECRETS_KEYS: an edge
// needs no project's variables.
type CertificateKeys struct {
	// Keys is nil when CERTIFICATE_KEYS is unset: keys are stored in
	// plaintext, as before.
	Keys *secret.Ring `env:"CERTIFICATE_KEYS"`
}

// Each internal API has a credential of its own, so that a role holding
// one cannot use another's door: the edge's token opens node-proxies and
// nothing else, a node's tokens do not open the management API.

// Cluster is the node API's credential: the api presents it to node
// agents for instances' logs.
type Cluster struct {
	Token Secret `env:"CLUSTER_TOKEN,required,notEmpty"`
}

// NodeProxy is the credential edges present to node-proxies, which forward
// their requests to instances.
type NodeProxy struct {
	Token Secret `env:"NODE_PROXY_TOKEN,required,notEmpty"`
}

// Management is the credential of the operators' management API.
type Management struct {
	Token Secret `env:"MANAGEMENT_TOKEN,required,notEmpty"`
}

// S3 is the object store (MinIO locally): uploaded sources, registry blobs.
type S3 struct {
	Endpoint        string `env:"S3_ENDPOINT,required,notEmpty"`
	Region          string `env:"S3_REGION" envDefault:"us-east-1"`
	Bucket          string `env:"S3_BUCKET,required,notEmpty"`
	AccessKeyID     string `env:"S3_ACCESS_KEY_ID,required,notEmpty"`
	SecretAccessKey Secret `env:"S3_SECRET_ACCESS_KEY,required,notEmpty"`
}

func (s S3) validate() []Problem {
	if s.Endpoint == "" {
		return nil // already reported as missing
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return []Problem{{"S3_ENDPOINT", "not an http:// or https:// URL"}}
	}
	return nil
}

// Host is the endpoint's host:port; Secure says whether it speaks TLS.
func (s S3) Host() string {
	u, _ := url.Parse(s.Endpoint) // checked at parse time
	return u.Host
}

// Secure says whether the endpoint is https.
func (s S3) Secure() bool {
	u, _ := url.Parse(s.Endpoint)
	return u.Scheme == "https"
}

// Uploads are the archives `zeitwork deploy ./dir` sends (internal/upload).
type Uploads struct {
	// MaxBytes bounds one archive; S3 enforces it on direct uploads.
	MaxBytes int64 `env:"UPLOAD_MAX_BYTES" envDefault:"536870912"`
	// S3URL is where clients reach S3 to upload directly: empty means
	// S3_ENDPOINT; "off" means they cannot (S3 on a private network), and
	// they stream their archives through the API instead.
	S3URL string `env:"UPLOAD_S3_URL"`
	// Expiry is how long a presigned upload may be used.
	Expiry time.Duration `env:"UPLOAD_EXPIRY" envDefault:"15m"`
	// Keep is how long an upload is kept: its build reads it once, soon.
	Keep time.Duration `env:"UPLOAD_KEEP" envDefault:"24h"`
}

func (u Uploads) validate() []Problem {
	var ps []Problem
	if u.MaxBytes <= 0 {
		ps = append(ps, Problem{"UPLOAD_MAX_BYTES", "must be positive"})
	}
	if p, err := url.Parse(u.S3URL); u.S3URL != "" && u.S3URL != "off" && (err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") || strings.Trim(p.Path, "/") != "") {
		ps = append(ps, Problem{"UPLOAD_S3_URL", `not an http:// or https:// URL without a path, nor "off"`})
	}
	// S3 refuses a POST policy valid for more than a week.
	if u.Expiry <= 0 || u.Expiry > 7*24*time.Hour {
		ps = append(ps, Problem{"UPLOAD_EXPIRY", "must be positive and at most 168h"})
	}
	if u.Keep <= u.Expiry {
		ps = append(ps, Problem{"UPLOAD_KEEP", "must be longer than UPLOAD_EXPIRY"})
	}
	return ps
}

// Direct says whether clients upload to S3 themselves.
func (u Uploads) Direct() bool { return u.S3URL != "off" }

// Queue tunes the River task queue.
type Queue struct {
	Workers int `env:"QUEUE_WORKERS" envDefault:"10"`
	// JobTimeout bounds a task's run unless its worker sets its own (builds
	// and deploy steps do; domain checks and rollbacks take seconds).
	JobTimeout time.Duration `env:"QUEUE_JOB_TIMEOUT" envDefault:"1m"`
	// RescueAfter is how long a task may run before it is presumed dead (its
	// worker crashed) and handed to another worker; a task is also left alone
	// while it has run for less than its kind allows (a deploy its health
	// deadline, a build a minute: see queue.Rescuable). Only operators' queues
	// rescue: builders never lead.
	RescueAfter time.Duration `env:"QUEUE_RESCUE_AFTER" envDefault:"1m"`
}

func (q Queue) validate() []Problem {
	// River refuses to start otherwise; say so before it does.
	if q.RescueAfter < q.JobTimeout {
		return []Problem{{"QUEUE_RESCUE_AFTER", "must be at least QUEUE_JOB_TIMEOUT"}}
	}
	return nil
}

// Registry is the image registry: builders push to it, node agents pull
// from it, operators read and delete its images.
type Registry struct {
	// Addr is the registry's host[:port], which image references name.
	Addr string `env:"REGISTRY_ADDR"`
	// Insecure speaks plain HTTP to the registry (local development only).
	Insecure bool   `env:"REGISTRY_INSECURE"`
	Username string `env:"REGISTRY_USERNAME"`
	Password Secret `env:"REGISTRY_PASSWORD"`
}

// PlainHTTP lists the registry hosts spoken to without TLS.
func (r Registry) PlainHTTP() []string {
	if !r.Insecure || r.Addr == "" {
		return nil
	}
	return []string{r.Addr}
}

// RegistryAuth is the registry's token service (internal/registryauth):
// CredentialSecret signs the short-lived credentials it hands out.
// Builders mint per-project credentials with it; operators also serve the
// token endpoint, signing the registry's tokens with TokenKey.
type RegistryAuth struct {
	CredentialSecret Secret `env:"REGISTRY_CREDENTIAL_SECRET"`
}

// Buildkit is the BuildKit daemon builds run on.
type Buildkit struct {
	Addr string `env:"BUILDKIT_ADDR,required,notEmpty"`
}

// Containerd is the containerd that runs a node's instances.
type Containerd struct {
	Addr string `env:"CONTAINERD_ADDR" envDefault:"/run/containerd/containerd.sock"`
	// Namespace holds this agent's containers; an agent touches no other.
	Namespace   string `env:"CONTAINERD_NAMESPACE" envDefault:"zeitwork"`
	Snapshotter string `env:"CONTAINERD_SNAPSHOTTER"`
}

// Platform is the platform's own names.
type Platform struct {
	// AppsDomain hosts <project>.<AppsDomain> and <deployment-id>.<AppsDomain>.
	AppsDomain string `env:"EDGE_APPS_DOMAIN" envDefault:"zeitwork.app"`
	// Domains are the platform's own domains: no custom domain may be under
	// them, and the edge gets wildcard certificates for them.
	Domains []string `env:"EDGE_PLATFORM_DOMAINS" envSeparator:"," envDefault:"zeitwork.com,zeitwork.app,zeitwork-dns.com"`
	// EdgeHost is the name custom domains point their CNAME at.
	EdgeHost string `env:"EDGE_HOST" envDefault:"edge.zeitwork.com"`
	// AppsURL is the apps domain as a browser reaches it, scheme and port
	// (https://<AppsDomain> when empty): the api shows deployments' URLs
	// with it, and dev's edge serves plain HTTP on a port of its own.
	AppsURL string `env:"EDGE_APPS_URL"`
}

func (p Platform) validate() []Problem {
	if p.AppsURL == "" {
		return nil
	}
	u, err := url.Parse(p.AppsURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() != p.AppsDomain ||
		strings.Trim(u.Path, "/") != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return []Problem{{"EDGE_APPS_URL", "not an http:// or https:// URL of EDGE_APPS_DOMAIN (with a port, if any) without a path"}}
	}
	return nil
}

// Reserved are the names no custom domain may be or be under: the
// platform domains and the apps domain.
func (p Platform) Reserved() []string {
	return append(append([]string(nil), p.Domains...), p.AppsDomain)
}

// CustomDomains tunes the checks of custom domains' DNS records.
type CustomDomains struct {
	// DNSResolver (host:port) answers the checks; empty uses the system's.
	DNSResolver string `env:"DOMAIN_DNS_RESOLVER"`
	// A pending domain is rechecked after a tenth of its age, at least
	// CheckInterval and at most MaxCheckInterval after the last check, and
	// given up (failed) once pending for GiveUpAfter.
	CheckInterval    time.Duration `env:"DOMAIN_CHECK_INTERVAL" envDefault:"30s"`
	MaxCheckInterval time.Duration `env:"DOMAIN_CHECK_MAX_INTERVAL" envDefault:"15m"`
	GiveUpAfter      time.Duration `env:"DOMAIN_GIVE_UP_AFTER" envDefault:"168h"`
	// A verified domain is rechecked every RecheckInterval and no longer
	// served after RecheckFailures failed rechecks in a row.
	RecheckInterval time.Duration `env:"DOMAIN_RECHECK_INTERVAL" envDefault:"1h"`
	RecheckFailures int           `env:"DOMAIN_RECHECK_FAILURES" envDefault:"3"`
}

func (c CustomDomains) validate() []Problem {
	var ps []Problem
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"DOMAIN_CHECK_INTERVAL", c.CheckInterval}, {"DOMAIN_CHECK_MAX_INTERVAL", c.MaxCheckInterval}, {"DOMAIN_GIVE_UP_AFTER", c.GiveUpAfter}, {"DOMAIN_RECHECK_INTERVAL", c.RecheckInterval}} {
		if d.v <= 0 {
			ps = append(ps, Problem{d.name, "must be positive"})
		}
	}
	if c.RecheckFailures <= 0 {
		ps = append(ps, Problem{"DOMAIN_RECHECK_FAILURES", "must be positive"})
	}
	return ps
}

// ACME is where the edge gets certificates: wildcards for the platform
// domains by DNS-01 through Cloudflare, and on demand for verified custom
// domains by HTTP-01/TLS-ALPN-01.
type ACME struct {
	// Directory is the ACME server; Let's Encrypt production by default.
	Directory string `env:"ACME_DIRECTORY" envDefault:"https://acme-v02.api.letsencrypt.org/directory"`
	// Email is the ACME account's contact. Required: without one certmagic
	// stores the account under the placeholder "default" and, on the next
	// start, registers a new account with that placeholder as its contact,
	// which ACME servers refuse; the edge would get no certificate again.
	Email string `env:"ACME_EMAIL"`
	// CARoots is a PEM file of roots to trust for the ACME server itself
	// (a private CA such as Pebble's); empty trusts the system roots.
	CARoots string `env:"ACME_CA_ROOTS"`
	// CloudflareToken is the API token DNS-01 uses; without it no wildcard
	// certificates are requested.
	CloudflareToken Secret `env:"CLOUDFLARE_API_TOKEN"`
	// CloudflareAPI is Cloudflare's API base (an emulator in tests).
	CloudflareAPI string `env:"CLOUDFLARE_API_URL" envDefault:"https://api.cloudflare.com/client/v4"`
	// Resolvers check DNS-01 propagation (host:port); empty uses the system's.
	Resolvers []string `env:"ACME_DNS_RESOLVERS" envSeparator:","`
}

// contactProblems checks what an edge serving TLS needs (Edge.validate
// asks only then: an edge that serves no TLS never speaks ACME).
func (a ACME) contactProblems() []Problem {
	if a.Email == "" {
		return []Problem{{"ACME_EMAIL", "required when the edge serves TLS: the contact of its ACME account"}}
	}
	if addr, err := mail.ParseAddress(a.Email); err != nil || addr.Address != a.Email || addr.Name != "" {
		return []Problem{{"ACME_EMAIL", fmt.Sprintf("%q is not an email address (name@example.com)", a.Email)}}
	}
	return nil
}

// GitHub is how the platform speaks to GitHub: the OAuth App side for
// sign-in, the GitHub App side for installations, repositories, tarballs
// and webhooks. The URLs point at github.com unless an emulator stands in.
type GitHub struct {
	// APIURL is GitHub's REST API; WebURL serves the OAuth pages
	// (/login/oauth/authorize, /login/oauth/access_token).
	APIURL string `env:"GITHUB_API_URL" envDefault:"https://api.github.com"`
	WebURL string `env:"GITHUB_WEB_URL" envDefault:"https://github.com"`
	// ClientID and ClientSecret are the App's OAuth credentials, used for
	// sign-in; both unset: no GitHub sign-in.
	ClientID     string `env:"GITHUB_CLIENT_ID"`
	ClientSecret Secret `env:"GITHUB_CLIENT_SECRET"`
	// AppID and AppPrivateKey (PEM) mint installation tokens; AppSlug
	// names the App in its install link (github.com/apps/<slug>).
	AppID         int64  `env:"GITHUB_APP_ID"`
	AppPrivateKey Secret `env:"GITHUB_APP_PRIVATE_KEY"`
	AppSlug       string `env:"GITHUB_APP_SLUG"`
	// WebhookSecret signs the App's webhook deliveries (X-Hub-Signature-256).
	WebhookSecret Secret `env:"GITHUB_WEBHOOK_SECRET"`
}

func (g GitHub) validate() []Problem {
	var out []Problem
	for _, u := range []struct{ name, value string }{{"GITHUB_API_URL", g.APIURL}, {"GITHUB_WEB_URL", g.WebURL}} {
		if p, err := url.Parse(u.value); err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
			out = append(out, Problem{u.name, "not an http:// or https:// URL"})
		}
	}
	if (g.ClientID == "") != (g.ClientSecret.Reveal() == "") {
		out = append(out, Problem{"GITHUB_CLIENT_ID", "must be set together with GITHUB_CLIENT_SECRET"})
	}
	if (g.AppID == 0) != (g.AppPrivateKey.Reveal() == "") {
		out = append(out, Problem{"GITHUB_APP_ID", "must be set together with GITHUB_APP_PRIVATE_KEY"})
	}
	return out
}

// RateLimits bound what one client can make the API do. Every API process
// counts in the same rate_limit_counters rows, so a limit holds however
// many replicas serve. Each is "<max>/<window>" (30/1m, 1000/1h) or "off".
type RateLimits struct {
	// SignIn counts GitHub sign-in starts and callbacks per client address
	// (each has its own count).
	SignIn ratelimit.Limit `env:"API_RATE_LIMIT_SIGN_IN" envDefault:"30/1m"`
	// Tokens counts API tokens a user creates with POST /v1/tokens.
	Tokens ratelimit.Limit `env:"API_RATE_LIMIT_TOKENS" envDefault:"60/1h"`
	// DeviceCodes counts device sign-ins (zeitwork login) started per
	// client address.
	DeviceCodes ratelimit.Limit `env:"API_RATE_LIMIT_DEVICE_CODES" envDefault:"30/1h"`
	// Webhooks counts GitHub's deliveries per App installation. GitHub does
	// not retry a refused delivery on its own, so it is generous: it stops a
	// runaway, not a busy organisation.
	Webhooks ratelimit.Limit `env:"API_RATE_LIMIT_WEBHOOKS" envDefault:"1200/1m"`
	// DomainChecks counts custom-domain checks a user asks for (POST
	// …/domains/{domain}/verify): each is DNS lookups made by the api.
	DomainChecks ratelimit.Limit `env:"API_RATE_LIMIT_DOMAIN_CHECKS" envDefault:"60/1h"`
	// TrustedProxies are the load balancers in front of the API (CIDRs).
	// A request from one of them is counted against the address it names
	// last in X-Forwarded-For that is not itself a trusted proxy; every
	// other request against its own address, whatever it claims.
	TrustedProxies []netip.Prefix `env:"API_TRUSTED_PROXIES" envSeparator:","`
}

// DeviceLogin is `zeitwork login`'s device sign-in.
type DeviceLogin struct {
	// VerificationURL is the page where a signed-in user enters the code
	// the CLI shows (the dashboard's); empty: <the API's own URL>/device.
	VerificationURL string `env:"API_DEVICE_VERIFICATION_URL"`
	// TTL is how long a code may wait for approval; Interval how often the
	// CLI may poll.
	TTL      time.Duration `env:"API_DEVICE_CODE_TTL" envDefault:"15m"`
	Interval time.Duration `env:"API_DEVICE_POLL_INTERVAL" envDefault:"5s"`
}

func (d DeviceLogin) validate() []Problem {
	var ps []Problem
	if d.VerificationURL != "" {
		if u, err := url.Parse(d.VerificationURL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" {
			ps = append(ps, Problem{"API_DEVICE_VERIFICATION_URL", "not an http:// or https:// URL without a query"})
		}
	}
	if d.TTL < time.Minute {
		ps = append(ps, Problem{"API_DEVICE_CODE_TTL", "must be at least 1m"})
	}
	if d.Interval < time.Second {
		ps = append(ps, Problem{"API_DEVICE_POLL_INTERVAL", "must be at least 1s"})
	}
	return ps
}

// Egress is how a node's instances reach the internet.
type Egress struct {
	// Mode is "nat": instances may open connections to the internet,
	// translated to the node's address, and to nothing of the cluster's
	// (other instances, the nodes, private ranges); or "off": no egress at
	// all. A simulated node (NETWORK_NODE_NETNS) makes its own uplink to
	// the machine; a real one names its interface in NETWORK_UPLINK.
	Mode string `env:"NODE_EGRESS" envDefault:"off"`
	// Uplink is the interface instances' egress leaves by.
	Uplink string `env:"NETWORK_UPLINK"`
	// Resolvers are the DNS servers instances are given, and may reach on
	// port 53 even in a private range. Unset: a simulated node's machine's
	// own resolvers, else public ones (1.1.1.1, 2606:4700:4700::1111).
	Resolvers []netip.Addr `env:"NETWORK_RESOLVERS" envSeparator:","`
	// Blocked are more destinations instances may not reach, beyond the
	// private, link-local, NAT64 and cloud metadata ranges always blocked:
	// the nodes' own public addresses, a provider's private network
	// numbered in public space.
	Blocked []netip.Prefix `env:"NETWORK_BLOCKED" envSeparator:","`
}

// Egress modes.
const (
	EgressNAT = "nat"
	EgressOff = "off"
)

func (e Egress) validate() []Problem {
	switch e.Mode {
	case EgressNAT, EgressOff:
	default:
		return []Problem{{"NODE_EGRESS", `must be "nat" or "off"`}}
	}
	if e.Mode == EgressOff && e.Uplink != "" {
		// An uplink named with egress off is almost surely a mistake: say
		// so rather than leave instances without egress in silence.
		return []Problem{{"NETWORK_UPLINK", `is set but NODE_EGRESS is "off": set NODE_EGRESS=nat for egress through it`}}
	}
	return nil
}
