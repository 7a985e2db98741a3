// Package domains owns projects' custom domains: adding a name (pending,
// with a verification token), checking DNS until the name is proved to be
// the project's (a CNAME to the edge host, or the TXT token), moving a name
// verified by one project to another that proves ownership with the token,
// re-verifying verified names until they no longer point at the edge, and
// removing them.
//
// A CNAME to the edge proves only that someone once pointed the name at
// the platform, not who. It is enough for a name nobody else ever had:
// once another project had the name, or any name under the same
// registrable domain, verified (domain_claims remembers, after removal
// too), or the name is covered by a wildcard record to the edge, only the
// project's own TXT token proves the claim. Otherwise a dangling CNAME
// left after a removal, or a customer's *.example.com CNAME, would hand
// the name and a certificate for it to any tenant. The edge routes verified names only; a database trigger
// wakes it on every change here, so verification and removal take effect at
// once. This package knows nothing of HTTP, and only store.go sees the
// domains table's rows.
package domains

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/hostname"
	"github.com/zeitwork/zeitwork/internal/queue"
)

// Errors callers tell apart; each wrapped with a message for the user.
var (
	// ErrInvalidName: the name cannot be a custom domain (not a host name,
	// an IP address, a public suffix).
	ErrInvalidName = errors.New("invalid domain name")
	// ErrPlatformDomain: the name is, or is below, one of the platform's
	// own domains.
	ErrPlatformDomain = errors.New("platform domain")
	// ErrExists: the project already has this name.
	ErrExists = errors.New("domain already added")
	// ErrProjectNotFound: there is no such project.
	ErrProjectNotFound = errors.New("project not found")
	// ErrNotFound: there is no such domain (on this project).
	ErrNotFound = errors.New("domain not found")
)

// TXTPrefix is the label under a domain where its TXT token is looked for.
const TXTPrefix = "_zeitwork."

// Config is how domains are checked; the operator fills it from its
// configuration (internal/config), where the defaults are.
type Config struct {
	// EdgeHost is what a domain's CNAME chain must reach
	// (edge.zeitwork.com). It is a platform name too.
	EdgeHost string
	// PlatformDomains are the platform's own domains (zeitwork.com,
	// zeitwork.app, ...): names under them are never custom domains.
	// Empty entries are skipped.
	PlatformDomains []string
	// Resolver answers the checks; nil uses the system's.
	Resolver Resolver
	// A pending domain is rechecked a tenth of its age after its last
	// check, but no sooner than CheckInterval and no later than
	// MaxCheckInterval; it is failed once pending for GiveUpAfter.
	CheckInterval    time.Duration
	MaxCheckInterval time.Duration
	GiveUpAfter      time.Duration
	// LookupTimeout bounds the DNS lookups of one check; zero is
	// DefaultLookupTimeout.
	LookupTimeout time.Duration
	// A verified domain is re-verified every RecheckInterval; after
	// RecheckFailures failed re-verifications in a row it is failed, and
	// the edge stops serving it and getting certificates for it. Zero
	// takes DefaultRecheckInterval and DefaultRecheckFailures.
	RecheckInterval time.Duration
	RecheckFailures int
}

// Defaults for Config's zero values.
const (
	DefaultLookupTimeout   = 10 * time.Second
	DefaultRecheckInterval = time.Hour
	DefaultRecheckFailures = 3
)

// Service adds, checks and removes custom domains.
type Service struct {
	pool  *pgxpool.Pool
	queue *queue.Queue
	cfg   Config
	log   *slog.Logger
}

// New returns the service. q enqueues each new domain's first check (in
// the transaction that adds it) and the sweep's rechecks; it may be an
// enqueue-only queue, with the checks worked elsewhere.
func New(pool *pgxpool.Pool, q *queue.Queue, cfg Config, log *slog.Logger) (*Service, error) {
	edgeHost, err := hostname.Normalize(cfg.EdgeHost)
	if err != nil {
		return nil, fmt.Errorf("domains: edge host %q is not a host name", cfg.EdgeHost)
	}
	cfg.EdgeHost = edgeHost
	var platform []string
	for _, d := range cfg.PlatformDomains {
		if d == "" {
			continue // an unset apps domain, or "a,,b"
		}
		n, err := hostname.Normalize(d)
		if err != nil {
			return nil, fmt.Errorf("domains: platform domain %q is not a host name", d)
		}
		platform = append(platform, n)
	}
	cfg.PlatformDomains = append(platform, edgeHost)
	if cfg.Resolver == nil {
		cfg.Resolver = NewResolver("")
	}
	if cfg.CheckInterval <= 0 || cfg.MaxCheckInterval <= 0 || cfg.GiveUpAfter <= 0 {
		return nil, errors.New("domains: check intervals and give-up time must be positive")
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = DefaultLookupTimeout
	}
	if cfg.RecheckInterval <= 0 {
		cfg.RecheckInterval = DefaultRecheckInterval
	}
	if cfg.RecheckFailures <= 0 {
		cfg.RecheckFailures = DefaultRecheckFailures
	}
	cfg.MaxCheckInterval = max(cfg.MaxCheckInterval, cfg.CheckInterval)
	return &Service{pool: pool, queue: q, cfg: cfg, log: log}, nil
}

// CheckInterval is how often pending domains should be swept for checks.
func (s *Service) CheckInterval() time.Duration { return s.cfg.CheckInterval }

// Instructions say what DNS record verifies a domain: either one does.
type Instructions struct {
	CNAMETarget string // <name> CNAME <CNAMETarget>
	TXTName     string // <TXTName> TXT <TXTValue>
	TXTValue    string
}

// Instructions for d.
func (s *Service) Instructions(d Domain) Instructions {
	return Instructions{CNAMETarget: s.cfg.EdgeHost, TXTName: TXTPrefix + d.Name, TXTValue: d.VerificationToken}
}

// Add gives project the custom domain name, pending, and queues its first
// check, all in one transaction.
func (s *Service) Add(ctx context.Context, project uuid.UUID, name string) (Domain, error) {
	var d Domain
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		d, err = s.AddTx(ctx, tx, project, name)
		return err
	})
	return d, err
}

// AddTx is Add as part of tx: the domain and its check task commit, or
// roll back, with it.
func (s *Service) AddTx(ctx context.Context, tx pgx.Tx, project uuid.UUID, name string) (Domain, error) {
	n, err := Normalize(name)
	if err != nil {
		return Domain{}, err
	}
	for _, p := range s.cfg.PlatformDomains {
		switch {
		case n == p:
			return Domain{}, fmt.Errorf("%w: %s is one of the platform's own names", ErrPlatformDomain, n)
		case under(n, p):
			return Domain{}, fmt.Errorf("%w: %s is under %s, one of the platform's own domains", ErrPlatformDomain, n, p)
		}
	}
	st := newStore(tx)
	if err := st.project(ctx, project); err != nil {
		return Domain{}, err
	}
	d, err := st.create(ctx, project, n, newToken())
	if err != nil {
		return Domain{}, err
	}
	if _, err := s.queue.EnqueueTx(ctx, tx, VerifyTask{DomainID: d.ID}); err != nil {
		return Domain{}, fmt.Errorf("add domain %s: %w", n, err)
	}
	s.log.InfoContext(ctx, "domain added", "domain_id", d.ID, "project_id", project, "name", n)
	return d, nil
}

// newToken is the TXT value that proves a claim: 128 random bits.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return "zeitwork-verify-" + hex.EncodeToString(b[:])
}

// List returns project's domains by name.
func (s *Service) List(ctx context.Context, project uuid.UUID) ([]Domain, error) {
	st := newStore(s.pool)
	if err := st.project(ctx, project); err != nil {
		return nil, err
	}
	return st.listByProject(ctx, project)
}

// Get returns project's domain domainID.
func (s *Service) Get(ctx context.Context, project, domainID uuid.UUID) (Domain, error) {
	d, err := newStore(s.pool).get(ctx, domainID)
	if err != nil {
		return Domain{}, err
	}
	if d.ProjectID != project {
		return Domain{}, fmt.Errorf("%w: %s", ErrNotFound, domainID)
	}
	return d, nil
}

// Verified returns the verified domain name (normalised), whichever
// project it is verified by; ErrNotFound if none.
func (s *Service) Verified(ctx context.Context, name string) (Domain, error) {
	return newStore(s.pool).verifiedByName(ctx, name)
}

// Remove deletes project's domain domainID. The edge stops routing the
// name as soon as it has rebuilt its table, which the delete wakes it for.
func (s *Service) Remove(ctx context.Context, project, domainID uuid.UUID) error {
	if err := newStore(s.pool).remove(ctx, project, domainID); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "domain removed", "domain_id", domainID, "project_id", project)
	return nil
}
