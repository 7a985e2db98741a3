package account

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
)

// Device sign-in, in the shape of RFC 8628: a CLI asks for a device code
// and a user code, shows the user code and a URL, and polls with the
// device code; the user, signed in on a browser, approves the user code;
// the CLI's next poll collects a new API token, exactly once.
//
// The device code is a bearer secret (only its SHA-256 is stored, like
// every other credential); the user code is short and typed by a person,
// so it only names an authorization for someone already signed in, who
// must approve it, and it lives for DefaultDeviceTTL at most.

const (
	// DefaultDeviceTTL is how long a device code lasts when Devices.TTL is 0:
	// long enough to open a browser and sign in, short enough that a code
	// seen over a shoulder is soon worthless.
	DefaultDeviceTTL = 15 * time.Minute
	// DefaultDeviceInterval is the polling interval when Devices.Interval is 0
	// (RFC 8628's default).
	DefaultDeviceInterval = 5 * time.Second
)

// userCodeAlphabet are RFC 8628's suggested characters: consonants only,
// so no code spells a word and none is confused with a digit (no I, O, U).
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

// Errors of a device's poll: RFC 8628's error codes.
var (
	// ErrAuthorizationPending: nobody has approved or denied the code yet.
	ErrAuthorizationPending = errors.New("authorization_pending")
	// ErrSlowDown: the device polled sooner than its interval after the last poll.
	ErrSlowDown = errors.New("slow_down")
	// ErrAccessDenied: the user denied the request.
	ErrAccessDenied = errors.New("access_denied")
	// ErrExpiredToken: the device code expired, or already yielded its token.
	ErrExpiredToken = errors.New("expired_token")
	// ErrInvalidGrant: no such device code.
	ErrInvalidGrant = errors.New("invalid_grant")
)

// Devices runs device sign-ins.
type Devices struct {
	DB db.Conn
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// TTL and Interval: 0 is DefaultDeviceTTL and DefaultDeviceInterval.
	TTL      time.Duration
	Interval time.Duration
}

func (d Devices) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d Devices) ttl() time.Duration {
	if d.TTL > 0 {
		return d.TTL
	}
	return DefaultDeviceTTL
}

// interval is how long a device waits between polls.
func (d Devices) interval() time.Duration {
	if d.Interval > 0 {
		return d.Interval
	}
	return DefaultDeviceInterval
}

// DeviceCode is a new device sign-in as its device sees it. DeviceCode is
// the only copy of the secret there will be.
type DeviceCode struct {
	DeviceCode string
	UserCode   string
	ExpiresAt  time.Time
	// ExpiresIn is the code's lifetime; Interval the time between polls.
	ExpiresIn time.Duration
	Interval  time.Duration
}

// DeviceAuthorization is a pending device sign-in as the approving user
// sees it.
type DeviceAuthorization struct {
	UserCode   string
	ClientName string
	CreatedAt  time.Time
	ExpiresAt  time.Time
}

// Start begins a device sign-in for a client calling itself clientName
// (shown to the approving user, and the token's name).
func (d Devices) Start(ctx context.Context, clientName string) (DeviceCode, error) {
	clientName = strings.TrimSpace(clientName)
	if clientName == "" || len(clientName) > MaxTokenName || strings.ContainsFunc(clientName, isControl) {
		return DeviceCode{}, fmt.Errorf("%w: client_name must have 1 to %d printable characters", ErrInvalid, MaxTokenName)
	}
	now := d.now()
	secret, hash := newSecret()
	// A user code may collide with a pending one (1 in 20^8 per pending
	// code); the unique index says so and another is drawn.
	for range 5 {
		code := newUserCode()
		row, err := db.New(d.DB).DeviceAuthorizationCreate(ctx, db.DeviceAuthorizationCreateParams{
			ID: id.New(), DeviceCodeHash: hash, UserCode: code, ClientName: clientName, ExpiresAt: now.Add(d.ttl()),
		})
		if uniqueViolation(err) {
			continue
		}
		if err != nil {
			return DeviceCode{}, fmt.Errorf("start device sign-in: %w", err)
		}
		return DeviceCode{DeviceCode: secret, UserCode: row.UserCode, ExpiresAt: row.ExpiresAt, ExpiresIn: d.ttl(), Interval: d.interval()}, nil
	}
	return DeviceCode{}, errors.New("start device sign-in: five user codes in a row were taken")
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// newUserCode draws "XXXX-XXXX" from userCodeAlphabet, uniformly (256 is
// not a multiple of 20, so bytes that would bias it are drawn again).
func newUserCode() string {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < 9 {
		if b.Len() == 4 {
			b.WriteByte('-')
			continue
		}
		_, _ = rand.Read(buf) // crypto/rand never fails on supported platforms
		if int(buf[0]) >= 256-256%len(userCodeAlphabet) {
			continue
		}
		b.WriteByte(userCodeAlphabet[int(buf[0])%len(userCodeAlphabet)])
	}
	return b.String()
}

// normalizeUserCode reads a user code the way people type it: any case,
// with or without the hyphen, with spaces. ok is false for anything that
// cannot be a code, which then matches nothing.
func normalizeUserCode(s string) (code string, ok bool) {
	s = strings.ToUpper(strings.Map(func(r rune) rune {
		if r == '-' || r == ' ' {
			return -1
		}
		return r
	}, s))
	if len(s) != 8 || strings.ContainsFunc(s, func(r rune) bool { return !strings.ContainsRune(userCodeAlphabet, r) }) {
		return "", false
	}
	return s[:4] + "-" + s[4:], true
}

// Pending returns the authorization a user code names while nobody has
// decided on it; anything else (unknown, malformed, expired, decided) is
// ErrNotFound.
func (d Devices) Pending(ctx context.Context, userCode string) (DeviceAuthorization, error) {
	code, ok := normalizeUserCode(userCode)
	if !ok {
		return DeviceAuthorization{}, fmt.Errorf("user code: %w", ErrNotFound)
	}
	row, err := db.New(d.DB).DeviceAuthorizationGetPendingByUserCode(ctx, db.DeviceAuthorizationGetPendingByUserCodeParams{UserCode: code, Now: d.now()})
	if errors.Is(err, pgx.ErrNoRows) {
		return DeviceAuthorization{}, fmt.Errorf("user code %s: %w", code, ErrNotFound)
	}
	if err != nil {
		return DeviceAuthorization{}, fmt.Errorf("user code %s: %w", code, err)
	}
	return DeviceAuthorization{UserCode: row.UserCode, ClientName: row.ClientName, CreatedAt: row.CreatedAt, ExpiresAt: row.ExpiresAt}, nil
}

// Approve lets the device holding userCode's device code sign in as user.
// A code that is not pending is ErrNotFound. Anyone signed in may approve
// a code they were shown: the code reaches them only through the device.
func (d Devices) Approve(ctx context.Context, user uuid.UUID, userCode string) error {
	return d.decide(ctx, user, userCode, true)
}

// Deny refuses the device holding userCode's device code; its next poll
// is ErrAccessDenied.
func (d Devices) Deny(ctx context.Context, user uuid.UUID, userCode string) error {
	return d.decide(ctx, user, userCode, false)
}

func (d Devices) decide(ctx context.Context, user uuid.UUID, userCode string, approve bool) error {
	code, ok := normalizeUserCode(userCode)
	if !ok {
		return fmt.Errorf("user code: %w", ErrNotFound)
	}
	q := db.New(d.DB)
	var err error
	if approve {
		_, err = q.DeviceAuthorizationApprove(ctx, db.DeviceAuthorizationApproveParams{UserCode: code, UserID: &user, Now: d.now()})
	} else {
		_, err = q.DeviceAuthorizationDeny(ctx, db.DeviceAuthorizationDenyParams{UserCode: code, UserID: &user, Now: d.now()})
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("user code %s: %w", code, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("decide user code %s: %w", code, err)
	}
	return nil
}

// Poll is a device asking whether its sign-in was approved. The answer is
// one of the poll errors, or the new API token of the user who approved
// it, whose Secret no later poll returns.
func (d Devices) Poll(ctx context.Context, deviceCode string) (Token, error) {
	if !wellFormed(deviceCode) {
		return Token{}, ErrInvalidGrant
	}
	var (
		tok    Token
		answer error // the poll's answer; the transaction commits either way, to record the poll
	)
	now := d.now()
	err := pgx.BeginFunc(ctx, d.DB, func(tx pgx.Tx) error {
		q := db.New(tx)
		row, err := q.DeviceAuthorizationGetByHashForUpdate(ctx, hashOf(deviceCode))
		if errors.Is(err, pgx.ErrNoRows) {
			answer = ErrInvalidGrant
			return nil
		}
		if err != nil {
			return fmt.Errorf("look up device code: %w", err)
		}
		switch {
		case row.ConsumedAt != nil || !now.Before(row.ExpiresAt):
			answer = ErrExpiredToken
			return nil
		case row.DeniedAt != nil:
			answer = ErrAccessDenied
			return nil
		}
		tooSoon := row.LastPolledAt != nil && now.Sub(*row.LastPolledAt) < d.interval()
		if err := q.DeviceAuthorizationPolled(ctx, db.DeviceAuthorizationPolledParams{ID: row.ID, Now: now}); err != nil {
			return fmt.Errorf("record poll: %w", err)
		}
		switch {
		case tooSoon:
			answer = ErrSlowDown
			return nil
		case row.ApprovedAt == nil || row.UserID == nil:
			answer = ErrAuthorizationPending
			return nil
		}
		secret, hash := newSecret()
		t, err := q.APITokenCreate(ctx, db.APITokenCreateParams{ID: id.New(), UserID: *row.UserID, Name: row.ClientName, TokenHash: hash})
		if err != nil {
			return fmt.Errorf("create API token: %w", err)
		}
		if err := q.DeviceAuthorizationConsume(ctx, db.DeviceAuthorizationConsumeParams{ID: row.ID, TokenID: &t.ID, Now: now}); err != nil {
			return fmt.Errorf("consume device code: %w", err)
		}
		tok = tokenFromRow(t)
		tok.Secret = TokenPrefix + secret
		return nil
	})
	if err != nil {
		return Token{}, fmt.Errorf("poll device code: %w", err)
	}
	if answer != nil {
		return Token{}, answer
	}
	return tok, nil
}

// Prune deletes device sign-ins that expired before before and returns
// how many.
func (d Devices) Prune(ctx context.Context, before time.Time) (int64, error) {
	n, err := db.New(d.DB).DeviceAuthorizationDeleteExpired(ctx, before)
	if err != nil {
		return 0, fmt.Errorf("prune device sign-ins: %w", err)
	}
	return n, nil
}
