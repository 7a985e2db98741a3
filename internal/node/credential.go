package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/db"
)

// ErrBadCredential: no such node, no credential recorded for it, or not
// this one. The three are one error so that a caller learns nothing about
// which nodes exist.
var ErrBadCredential = errors.New("node: bad credential")

// NewCredential returns a fresh secret for a node agent to prove itself
// with to the control plane. Only its hash is stored in the database, so
// reading the nodes table does not let anyone pose as a node.
func NewCredential() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func credentialHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SetCredential records the hash of the node's credential secret.
func (s Store) SetCredential(ctx context.Context, id uuid.UUID, secret string) error {
	if err := s.q().NodeSetCredentialHash(ctx, db.NodeSetCredentialHashParams{ID: id, CredentialHash: new(credentialHash(secret))}); err != nil {
		return fmt.Errorf("set node credential: %w", err)
	}
	return nil
}

// Authenticate checks that secret is node id's credential.
func (s Store) Authenticate(ctx context.Context, id uuid.UUID, secret string) error {
	stored, err := s.q().NodeGetCredentialHash(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && stored == nil) {
		return ErrBadCredential
	}
	if err != nil {
		return fmt.Errorf("node credential: %w", err)
	}
	if secret == "" || subtle.ConstantTimeCompare([]byte(*stored), []byte(credentialHash(secret))) != 1 {
		return ErrBadCredential
	}
	return nil
}

// Projects are the projects with instances wanted on the node: the only
// images it may pull.
func (s Store) Projects(ctx context.Context, id uuid.UUID) ([]uuid.UUID, error) {
	ps, err := s.q().NodeListProjects(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("node projects: %w", err)
	}
	return ps, nil
}
