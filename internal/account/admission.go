package account

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
)

// MaxListed is the most entries Waiting and Waitlist return.
const MaxListed = 1000

// Admit lets a user off the waitlist; admitting an admitted user is not
// an error, an unknown one is ErrNotFound.
func (s Store) Admit(ctx context.Context, user uuid.UUID) error {
	_, err := s.q().UserAdmit(ctx, user)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("user %s: %w", user, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("admit user %s: %w", user, err)
	}
	return nil
}

// Waiting returns the users who signed in and wait for admission, longest
// waiting first.
func (s Store) Waiting(ctx context.Context) ([]User, error) {
	rows, err := s.q().UserListWaiting(ctx, MaxListed)
	if err != nil {
		return nil, fmt.Errorf("list waiting users: %w", err)
	}
	users := make([]User, len(rows))
	for i, r := range rows {
		users[i] = userFromRow(r)
	}
	return users, nil
}

// WaitlistEntry is an address someone left to hear when they can join.
type WaitlistEntry struct {
	ID        uuid.UUID
	Email     string
	CreatedAt time.Time
}

// JoinWaitlist puts an address (trimmed, lower-cased) on the waitlist; an
// address already on it stays as it was (the list keeps its first sign-up
// time).
func (s Store) JoinWaitlist(ctx context.Context, email string) error {
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != strings.TrimSpace(email) || addr.Name != "" || len(addr.Address) > 254 ||
		strings.Count(addr.Address, "@") != 1 || strings.ContainsAny(addr.Address, " \t\r\n\"") {
		return fmt.Errorf("%w: %q is not an e-mail address", ErrInvalid, email)
	}
	_, err = s.q().WaitlistJoin(ctx, db.WaitlistJoinParams{ID: id.New(), Email: addr.Address})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) { // no row: already on the list
		return fmt.Errorf("join waitlist: %w", err)
	}
	return nil
}

// Waitlist returns the addresses on the waitlist, oldest first.
func (s Store) Waitlist(ctx context.Context) ([]WaitlistEntry, error) {
	rows, err := s.q().WaitlistList(ctx, db.WaitlistListParams{MaxRows: MaxListed})
	if err != nil {
		return nil, fmt.Errorf("list waitlist: %w", err)
	}
	entries := make([]WaitlistEntry, len(rows))
	for i, r := range rows {
		entries[i] = WaitlistEntry{ID: r.ID, Email: r.Email, CreatedAt: r.CreatedAt}
	}
	return entries, nil
}
