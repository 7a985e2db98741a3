package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

func privateKeyPEM(t *testing.T) []byte {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// TestPrivateKeysAreSealedAtRest: with a key ring, what lands in the
// certificates table is not the private key, it opens only under its own
// name, and an edge without the ring cannot read it.
func TestPrivateKeysAreSealedAtRest(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	ring, _ := secret.ParseRing(secret.NewKey("c1"))
	s := NewStorage(pool, ring, zlog.Discard())
	key, name := privateKeyPEM(t), "certificates/acme/a.test/a.test.key"
	if err := s.Store(ctx, name, key); err != nil {
		t.Fatal(err)
	}
	row, err := db.New(pool).CertificateGet(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(row.Value, []byte("PRIVATE KEY")) || bytes.Contains(row.Value, key[40:80]) || !bytes.HasPrefix(row.Value, SealedWith("c1")) {
		t.Fatalf("stored in the clear: %q", row.Value)
	}
	if got, err := s.Load(ctx, name); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("Load: %v", err)
	}
	// Copied under another name, it does not open.
	if err := db.New(pool).CertificatePut(ctx, db.CertificatePutParams{Key: "certificates/acme/evil.test/evil.test.key", Value: row.Value}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "certificates/acme/evil.test/evil.test.key"); !errors.Is(err, secret.ErrDecrypt) {
		t.Fatalf("moved value: %v", err)
	}
	if _, err := NewStorage(pool, nil, zlog.Discard()).Load(ctx, name); !errors.Is(err, ErrSealed) {
		t.Fatalf("without the ring: %v", err)
	}
}

// TestPlaintextRowsAreReadAndSealedOnWrite: rows stored before sealing was
// turned on stay readable, and are sealed when next written.
func TestPlaintextRowsAreReadAndSealedOnWrite(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	name, key := "certificates/acme/old.test/old.test.key", privateKeyPEM(t)
	if err := NewStorage(pool, nil, zlog.Discard()).Store(ctx, name, key); err != nil {
		t.Fatal(err)
	}
	ring, _ := secret.ParseRing(secret.NewKey("c1"))
	s := NewStorage(pool, ring, zlog.Discard())
	if got, err := s.Load(ctx, name); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("plaintext row: %v", err)
	}
	renewed := privateKeyPEM(t)
	if err := s.Store(ctx, name, renewed); err != nil {
		t.Fatal(err)
	}
	row, _ := db.New(pool).CertificateGet(ctx, name)
	if !bytes.HasPrefix(row.Value, SealedWith("c1")) || bytes.Contains(row.Value, []byte("PRIVATE KEY")) {
		t.Fatalf("rewritten in the clear: %q", row.Value)
	}
	if got, err := s.Load(ctx, name); err != nil || !bytes.Equal(got, renewed) {
		t.Fatalf("Load after write: %v", err)
	}
}

// TestRotateSealsPlaintextAndOldKeysResumably: rotation seals rows stored
// in plaintext and rows under an older key with the newest key, one batch
// per transaction; cancelled after one batch and run again, it finishes,
// and every value loads as it was.
func TestRotateSealsPlaintextAndOldKeysResumably(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	old := secret.NewKey("c1")
	ring1, _ := secret.ParseRing(old)
	want := map[string][]byte{}
	for i, s := range []*Storage{NewStorage(pool, nil, zlog.Discard()), NewStorage(pool, ring1, zlog.Discard())} {
		for _, d := range []string{"a", "b"} {
			name := "certificates/acme/" + d + string(rune('0'+i)) + ".test/x.key"
			want[name] = privateKeyPEM(t)
			if err := s.Store(ctx, name, want[name]); err != nil {
				t.Fatal(err)
			}
		}
	}
	ring2, _ := secret.ParseRing(secret.NewKey("c2") + "," + old)
	cctx, cancel := context.WithCancel(ctx)
	first, err := Rotate(cctx, pool, ring2, 1, func(Rotation) { cancel() })
	if !errors.Is(err, context.Canceled) || first.Sealed != 1 || first.Batches != 1 {
		t.Fatalf("cancelled run: %+v %v", first, err)
	}
	second, err := Rotate(ctx, pool, ring2, 1, nil)
	if err != nil || second.Sealed != 3 || len(second.Failed) != 0 {
		t.Fatalf("second run: %+v %v", second, err)
	}
	s := NewStorage(pool, ring2, zlog.Discard())
	for name, key := range want {
		row, _ := db.New(pool).CertificateGet(ctx, name)
		if !bytes.HasPrefix(row.Value, SealedWith("c2")) {
			t.Errorf("%s not under c2: %q", name, row.Value[:20])
		}
		if got, err := s.Load(ctx, name); err != nil || !bytes.Equal(got, key) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if third, err := Rotate(ctx, pool, ring2, 1, nil); err != nil || third.Sealed != 0 || third.Batches != 0 {
		t.Fatalf("third run: %+v %v", third, err)
	}
}
