package certs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// Storage is certmagic's key/value store and distributed lock on Postgres
// (tables certificates and certificate_locks), so that every edge replica
// serves the certificates any of them obtained, and only one of them asks
// the CA for a given certificate at a time.
//
// A lock expires lockTTL after it was last refreshed; its holder refreshes
// it while it is held, so a replica that crashes mid-issuance frees its
// locks within lockTTL and another replica takes over.
//
// With keys, values are sealed at rest (see seal.go).
type Storage struct {
	q      *db.Queries
	keys   *secret.Ring // nil: values are stored as they are
	holder string       // this Storage in certificate_locks.holder
	log    *slog.Logger

	lockTTL  time.Duration // how long a lock lives without a refresh
	lockPoll time.Duration // how often a waiting Lock retries

	mu   sync.Mutex
	held map[string]*heldLock // locks taken through this Storage
}

// heldLock is a lock this Storage holds or is taking: later Lock calls in
// this process wait on done, and stop ends the refreshing.
type heldLock struct {
	done chan struct{}
	stop context.CancelFunc
}

var (
	_ certmagic.Storage          = (*Storage)(nil)
	_ certmagic.LockLeaseRenewer = (*Storage)(nil)
)

// NewStorage returns a Storage on pool. Each Storage is its own lock
// holder (host name and a random id), as if it were its own replica.
// keys, when not nil, seal what it stores.
func NewStorage(pool *pgxpool.Pool, keys *secret.Ring, log *slog.Logger) *Storage {
	host, _ := os.Hostname()
	return &Storage{
		q:        db.New(pool),
		keys:     keys,
		holder:   host + "/" + id.New().String(),
		log:      log,
		lockTTL:  time.Minute,
		lockPoll: time.Second,
		held:     map[string]*heldLock{},
	}
}

// Store puts value at key.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	if s.keys != nil {
		value = Seal(s.keys, key, value)
	}
	if err := s.q.CertificatePut(ctx, db.CertificatePutParams{Key: key, Value: value}); err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	c, err := s.q.CertificateGet(ctx, key)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("load %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", key, err)
	}
	v, err := Open(s.keys, key, c.Value)
	if err != nil {
		return nil, fmt.Errorf("load %w", err)
	}
	return v, nil
}

// Delete removes key and, if key is a "directory", everything below it.
// A key that does not exist is not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	if _, err := s.q.CertificateDelete(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	ok, err := s.q.CertificateExists(ctx, key)
	return err == nil && ok
}

// List returns the keys directly below prefix (files and directories), or
// with recursive every key below it, directories included, as certmagic's
// FileStorage does. A prefix with nothing below it is fs.ErrNotExist.
func (s *Storage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	dir := strings.TrimSuffix(prefix, "/")
	if dir != "" {
		dir += "/"
	}
	keys, err := s.q.CertificateListByPrefix(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	var out []string
	seen := map[string]bool{}
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, k := range keys {
		rest := k[len(dir):]
		if !recursive {
			first, _, _ := strings.Cut(rest, "/")
			add(dir + first)
			continue
		}
		for i := range len(rest) {
			if rest[i] == '/' {
				add(dir + rest[:i])
			}
		}
		add(k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("list %s: %w", prefix, fs.ErrNotExist)
	}
	return out, nil
}

// Stat describes key: a file, a directory (IsTerminal false), or
// fs.ErrNotExist.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	st, err := s.q.CertificateStat(ctx, key)
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: st.ModifiedAt, Size: st.SizeBytes, IsTerminal: true}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return certmagic.KeyInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	dir, err := s.q.CertificateExists(ctx, key)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	if !dir {
		return certmagic.KeyInfo{}, fmt.Errorf("stat %s: %w", key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

// Lock blocks until it holds the lock name, or ctx ends. Other replicas
// wait for the lock in Postgres; other goroutines of this process wait
// for it here first, since to Postgres they are the same holder.
func (s *Storage) Lock(ctx context.Context, name string) error {
	h, err := s.lockLocal(ctx, name)
	if err != nil {
		return err
	}
	for {
		_, err := s.q.CertificateLockAcquire(ctx, db.CertificateLockAcquireParams{Name: name, Holder: s.holder, TtlSeconds: s.lockTTL.Seconds()})
		if err == nil {
			break
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			s.unlockLocal(name, h)
			return fmt.Errorf("lock %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			s.unlockLocal(name, h)
			return fmt.Errorf("lock %s: %w", name, ctx.Err())
		case <-time.After(s.lockPoll):
		}
	}
	refreshCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	h.stop = stop
	go s.refresh(refreshCtx, name)
	return nil
}

// Unlock releases the lock name, taken with Lock.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("unlock %s: not locked", name)
	}
	h.stop()
	defer s.unlockLocal(name, h)
	n, err := s.q.CertificateLockRelease(context.WithoutCancel(ctx), db.CertificateLockReleaseParams{Name: name, Holder: s.holder})
	if err != nil {
		// It expires by itself within lockTTL.
		return fmt.Errorf("unlock %s: %w", name, err)
	}
	if n == 0 {
		s.log.WarnContext(ctx, "certificate lock was lost before it was released", "lock", name)
	}
	return nil
}

// RenewLockLease extends a lock this Storage holds, for certmagic's long
// operations; the refresher keeps extending it by lockTTL afterwards.
func (s *Storage) RenewLockLease(ctx context.Context, name string, lease time.Duration) error {
	n, err := s.q.CertificateLockRefresh(ctx, db.CertificateLockRefreshParams{Name: name, Holder: s.holder, TtlSeconds: max(lease, s.lockTTL).Seconds()})
	if err != nil {
		return fmt.Errorf("renew lock %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("renew lock %s: lost to another holder", name)
	}
	return nil
}

// refresh extends the lock name every third of its lifetime until ctx
// ends or the lock turns out lost.
func (s *Storage) refresh(ctx context.Context, name string) {
	t := time.NewTicker(s.lockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.q.CertificateLockRefresh(ctx, db.CertificateLockRefreshParams{Name: name, Holder: s.holder, TtlSeconds: s.lockTTL.Seconds()})
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			// Postgres may come back before the lock expires: keep trying.
			s.log.WarnContext(ctx, "certificate lock not refreshed", "lock", name, "err", err)
		case n == 0:
			s.log.WarnContext(ctx, "certificate lock lost to another holder", "lock", name)
			return
		}
	}
}

// lockLocal waits until no other goroutine of this Storage holds name and
// marks it held.
func (s *Storage) lockLocal(ctx context.Context, name string) (*heldLock, error) {
	for {
		s.mu.Lock()
		other := s.held[name]
		if other == nil {
			h := &heldLock{done: make(chan struct{}), stop: func() {}}
			s.held[name] = h
			s.mu.Unlock()
			return h, nil
		}
		s.mu.Unlock()
		select {
		case <-other.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("lock %s: %w", name, ctx.Err())
		}
	}
}

func (s *Storage) unlockLocal(name string, h *heldLock) {
	s.mu.Lock()
	if s.held[name] == h {
		delete(s.held, name)
	}
	s.mu.Unlock()
	close(h.done)
}

// VerifiedDomains allows exactly the names of verified custom domains. A
// name no project has added is ErrUnknownName, which the Manager remembers
// for a while; a pending one is only ErrNotVerified, since it may be
// verified any moment.
func VerifiedDomains(pool *pgxpool.Pool) Decision {
	q := db.New(pool)
	return func(ctx context.Context, name string) error {
		status, err := q.DomainGetStatusByName(ctx, name)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("%s: %w", name, ErrUnknownName)
		case err != nil:
			return fmt.Errorf("%s: look up domain: %w", name, err)
		case status != "verified":
			return fmt.Errorf("%s: %w", name, ErrNotVerified)
		}
		return nil
	}
}
