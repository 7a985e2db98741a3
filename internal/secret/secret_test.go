package secret

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestSealOpenRotate(t *testing.T) {
	k1 := NewKey("k1")
	old, err := ParseRing(k1)
	if err != nil {
		t.Fatal(err)
	}
	ct, kid := old.Seal([]byte("postgres://u:hunter2@db/app"), "env/p1/DATABASE_URL")
	if kid != "k1" || bytes.Contains(ct, []byte("hunter2")) {
		t.Fatalf("Seal = %q under %s", ct, kid)
	}
	// Two seals of one value differ: the nonce is fresh.
	if ct2, _ := old.Seal([]byte("postgres://u:hunter2@db/app"), "env/p1/DATABASE_URL"); bytes.Equal(ct, ct2) {
		t.Fatal("identical ciphertexts for two seals")
	}

	// A new key is added in front; old ciphertexts still open.
	rotated, err := ParseRing(NewKey("k2") + "," + k1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rotated.Open(ct, kid, "env/p1/DATABASE_URL")
	if err != nil || string(got) != "postgres://u:hunter2@db/app" {
		t.Fatalf("Open after rotation = %q, %v", got, err)
	}
	if _, kid := rotated.Seal([]byte("x"), "c"); kid != "k2" {
		t.Fatalf("new seals use %s, want k2", kid)
	}
}

var lastKey = NewKey("k1")

func TestOpenRefusesWrongContextKeyAndTampering(t *testing.T) {
	r, err := ParseRing(lastKey)
	if err != nil {
		t.Fatal(err)
	}
	ct, kid := r.Seal([]byte("s3cr3t"), "env/p1/TOKEN")
	if _, err := r.Open(ct, kid, "env/p2/TOKEN"); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("value moved to another project opened: %v", err)
	}
	if _, err := r.Open(ct, "k9", "env/p1/TOKEN"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	ct[len(ct)-1] ^= 1
	if _, err := r.Open(ct, kid, "env/p1/TOKEN"); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered ciphertext opened: %v", err)
	}
	if _, err := r.Open([]byte("short"), kid, "env/p1/TOKEN"); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("short ciphertext: %v", err)
	}
}

func TestParseRingErrorsNeverShowKeys(t *testing.T) {
	for _, in := range []string{"", "nokey", "k1:notbase64!!", "k1:c2hvcnQ=", "bad id!:" + strings.Repeat("A", 44), lastKey + "," + lastKey} {
		_, err := ParseRing(in)
		if err == nil {
			t.Errorf("ParseRing(%q) accepted", in)
			continue
		}
		if _, b64, ok := strings.Cut(lastKey, ":"); ok && strings.Contains(err.Error(), b64) {
			t.Errorf("error shows key material: %v", err)
		}
	}
}
