package project

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/domains"
)

var (
	// ErrNoDomains: the custom domains service is not configured.
	ErrNoDomains = errors.New("custom domains are not configured")
	// ErrDomainTaken: another project has verified the name, or this one
	// already has it.
	ErrDomainTaken = errors.New("domain taken")
)

// Domains are projects' custom domains as their members see them: package
// domains behind a membership check. Anyone else gets ErrNotFound for the
// project, exactly as for one that does not exist.
type Domains struct {
	DB db.Conn
	// Service is nil when custom domains are not configured: every call
	// is ErrNoDomains.
	Service *domains.Service
}

func (d Domains) member(ctx context.Context, user, project uuid.UUID) error {
	if d.Service == nil {
		return ErrNoDomains
	}
	_, err := Store{DB: d.DB}.Get(ctx, user, project)
	return err
}

// List returns up to limit of the project's domains with ids after after,
// oldest first.
func (d Domains) List(ctx context.Context, user, project, after uuid.UUID, limit int32) ([]domains.Domain, error) {
	if err := d.member(ctx, user, project); err != nil {
		return nil, err
	}
	return d.Service.Page(ctx, project, after, limit)
}

// Add gives the project the custom domain name, pending until DNS proves
// it. A name another project has verified is ErrDomainTaken unless move
// is set: then the claim waits for the TXT record, the only proof that
// moves a verified name (a CNAME to the edge is what its current owner set
// up, so it proves nothing about who asks).
func (d Domains) Add(ctx context.Context, user, project uuid.UUID, name string, move bool) (domains.Domain, error) {
	if err := d.member(ctx, user, project); err != nil {
		return domains.Domain{}, err
	}
	n, err := domains.Normalize(name)
	if err != nil {
		return domains.Domain{}, err
	}
	owner, err := d.Service.Verified(ctx, n)
	switch {
	case err == nil && owner.ProjectID == project:
		return domains.Domain{}, fmt.Errorf("%w: the project already has %s", ErrDomainTaken, n)
	case err == nil && !move:
		return domains.Domain{}, fmt.Errorf("%w: %s is verified by another project; to move it here, add it with move set and prove owning it with its TXT record", ErrDomainTaken, n)
	case err != nil && !errors.Is(err, domains.ErrNotFound):
		return domains.Domain{}, err
	}
	dom, err := d.Service.Add(ctx, project, n)
	if errors.Is(err, domains.ErrExists) {
		return domains.Domain{}, fmt.Errorf("%w: %w", ErrDomainTaken, err)
	}
	return dom, err
}

// Get returns the project's domain name.
func (d Domains) Get(ctx context.Context, user, project uuid.UUID, name string) (domains.Domain, error) {
	if err := d.member(ctx, user, project); err != nil {
		return domains.Domain{}, err
	}
	return d.Service.GetByName(ctx, project, name)
}

// Remove deletes the project's domain name; the edge stops routing it at
// once.
func (d Domains) Remove(ctx context.Context, user, project uuid.UUID, name string) error {
	dom, err := d.Get(ctx, user, project, name)
	if err != nil {
		return err
	}
	return d.Service.Remove(ctx, project, dom.ID)
}

// Verify checks the domain's DNS now, instead of at the next sweep, and
// returns what the check found: verified, or pending (or failed) with the
// reason.
func (d Domains) Verify(ctx context.Context, user, project uuid.UUID, name string) (domains.Domain, error) {
	dom, err := d.Get(ctx, user, project, name)
	if err != nil {
		return domains.Domain{}, err
	}
	return d.Service.Check(ctx, dom.ID)
}

// Instructions say which DNS records verify dom.
func (d Domains) Instructions(dom domains.Domain) domains.Instructions {
	return d.Service.Instructions(dom)
}
