package certs

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func TestStorageKeys(t *testing.T) {
	t.Parallel()
	s := NewStorage(testdb.New(t), nil, zlog.Discard())
	ctx := context.Background()
	for _, k := range []string{
		"certificates/ca/a.test/a.test.crt",
		"certificates/ca/a.test/a.test.key",
		"certificates/ca/b.test/b.test.crt",
		"certificates/cab/c.test/c.test.crt", // "ca" is not a prefix of "cab"
		"ocsp/x",
	} {
		if err := s.Store(ctx, k, []byte("v:"+k)); err != nil {
			t.Fatal(err)
		}
	}

	v, err := s.Load(ctx, "certificates/ca/a.test/a.test.key")
	if err != nil || string(v) != "v:certificates/ca/a.test/a.test.key" {
		t.Fatalf("Load: %q %v", v, err)
	}
	if err := s.Store(ctx, "ocsp/x", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Load(ctx, "ocsp/x"); string(v) != "new" {
		t.Fatalf("Store does not overwrite: %q", v)
	}
	if _, err := s.Load(ctx, "certificates/ca"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a directory: %v, want fs.ErrNotExist", err)
	}

	list := func(prefix string, recursive bool) []string {
		t.Helper()
		keys, err := s.List(ctx, prefix, recursive)
		if err != nil {
			t.Fatalf("List(%q, %v): %v", prefix, recursive, err)
		}
		return keys
	}
	if got, want := list("certificates/ca", false), []string{"certificates/ca/a.test", "certificates/ca/b.test"}; !slices.Equal(got, want) {
		t.Errorf("List non-recursive = %q, want %q", got, want)
	}
	if got, want := list("certificates", true), []string{
		"certificates/ca", "certificates/ca/a.test", "certificates/ca/a.test/a.test.crt", "certificates/ca/a.test/a.test.key",
		"certificates/ca/b.test", "certificates/ca/b.test/b.test.crt",
		"certificates/cab", "certificates/cab/c.test", "certificates/cab/c.test/c.test.crt",
	}; !slices.Equal(got, want) {
		t.Errorf("List recursive = %q, want %q", got, want)
	}
	if got, want := list("", false), []string{"certificates", "ocsp"}; !slices.Equal(got, want) {
		t.Errorf("List of the root = %q, want %q", got, want)
	}
	if _, err := s.List(ctx, "nothing/here", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List of a missing prefix: %v, want fs.ErrNotExist", err)
	}

	file, err := s.Stat(ctx, "certificates/ca/a.test/a.test.crt")
	if err != nil || !file.IsTerminal || file.Size != int64(len("v:certificates/ca/a.test/a.test.crt")) || file.Modified.IsZero() {
		t.Errorf("Stat of a file: %+v %v", file, err)
	}
	dir, err := s.Stat(ctx, "certificates/ca")
	if err != nil || dir.IsTerminal || dir.Key != "certificates/ca" {
		t.Errorf("Stat of a directory: %+v %v", dir, err)
	}
	if _, err := s.Stat(ctx, "certificates/c"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a partial component: %v, want fs.ErrNotExist", err)
	}
	if !s.Exists(ctx, "certificates/ca") || !s.Exists(ctx, "ocsp/x") || s.Exists(ctx, "certificates/c") {
		t.Error("Exists disagrees with Stat")
	}

	// Deleting a directory deletes what is below it and nothing beside it.
	if err := s.Delete(ctx, "certificates/ca"); err != nil {
		t.Fatal(err)
	}
	if got, want := list("certificates", true), []string{"certificates/cab", "certificates/cab/c.test", "certificates/cab/c.test/c.test.crt"}; !slices.Equal(got, want) {
		t.Errorf("after Delete(dir): %q, want %q", got, want)
	}
	if err := s.Delete(ctx, "certificates/ca"); err != nil {
		t.Errorf("Delete of a missing key: %v, want nil", err)
	}
}

func TestStorageLock(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	a, b := NewStorage(pool, nil, zlog.Discard()), NewStorage(pool, nil, zlog.Discard())
	a.lockPoll, b.lockPoll = 20*time.Millisecond, 20*time.Millisecond
	ctx := context.Background()
	blocked := func(s *Storage, name string) bool {
		t.Helper()
		wait, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		err := s.Lock(wait, name)
		if err == nil {
			s.Unlock(ctx, name)
			return false
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock(%s): %v", name, err)
		}
		return true
	}

	if err := a.Lock(ctx, "issue_cert_a.test"); err != nil {
		t.Fatal(err)
	}
	if !holds(t, pool, "issue_cert_a.test", a) {
		t.Fatal("the lock row does not name a as holder")
	}
	// Another replica waits, and so does another goroutine of this one
	// (to Postgres they are the same holder); another name is free.
	if !blocked(b, "issue_cert_a.test") {
		t.Fatal("a second replica took a held lock")
	}
	if !blocked(a, "issue_cert_a.test") {
		t.Fatal("a second goroutine took a lock its replica holds")
	}
	if blocked(b, "issue_cert_b.test") {
		t.Fatal("a free lock was not granted")
	}

	// Unlock hands the lock to the waiter.
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "issue_cert_a.test") }()
	if err := a.Unlock(ctx, "issue_cert_a.test"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if !holds(t, pool, "issue_cert_a.test", b) || holds(t, pool, "issue_cert_a.test", a) {
		t.Fatal("after the handover the lock row does not name b alone")
	}
	if err := b.Unlock(ctx, "issue_cert_a.test"); err != nil {
		t.Fatal(err)
	}
	if holds(t, pool, "issue_cert_a.test", b) {
		t.Fatal("the lock is still held after Unlock")
	}
	if err := b.Unlock(ctx, "issue_cert_a.test"); err == nil {
		t.Fatal("Unlock of a lock not held should fail")
	}
}

// A replica that crashed while holding a lock leaves its row behind; once
// that has expired, another replica takes the lock over.
func TestStorageLockExpiredIsTakenOver(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	crashed := &Storage{holder: "crashed-replica"}
	if _, err := db.New(pool).CertificateLockAcquire(ctx, db.CertificateLockAcquireParams{Name: "issue_cert_x.test", Holder: crashed.holder, TtlSeconds: -1}); err != nil {
		t.Fatal(err)
	}
	s := NewStorage(pool, nil, zlog.Discard())
	if err := s.Lock(ctx, "issue_cert_x.test"); err != nil {
		t.Fatal(err)
	}
	if !holds(t, pool, "issue_cert_x.test", s) || holds(t, pool, "issue_cert_x.test", crashed) {
		t.Fatal("the expired lock was not taken over")
	}
	if err := s.Unlock(ctx, "issue_cert_x.test"); err != nil {
		t.Fatal(err)
	}
}

// A held lock outlives its TTL because its holder refreshes it.
func TestStorageLockIsRefreshedWhileHeld(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	a, b := NewStorage(pool, nil, zlog.Discard()), NewStorage(pool, nil, zlog.Discard())
	a.lockTTL = time.Second
	b.lockPoll = 50 * time.Millisecond
	ctx := context.Background()
	if err := a.Lock(ctx, "issue_cert_r.test"); err != nil {
		t.Fatal(err)
	}
	wait, cancel := context.WithTimeout(ctx, 3*a.lockTTL)
	defer cancel()
	if err := b.Lock(wait, "issue_cert_r.test"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b.Lock while a holds the lock past its TTL: %v, want deadline exceeded", err)
	}
	if err := a.Unlock(ctx, "issue_cert_r.test"); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock(ctx, "issue_cert_r.test"); err != nil {
		t.Fatal(err)
	}
}

// holds reports whether s holds the lock name according to Postgres (a
// refresh succeeds only for the holder).
func holds(t *testing.T, pool *pgxpool.Pool, name string, s *Storage) bool {
	t.Helper()
	n, err := db.New(pool).CertificateLockRefresh(context.Background(), db.CertificateLockRefreshParams{Name: name, Holder: s.holder, TtlSeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}
