// Package secret encrypts values at rest — the projects' environment
// variables — with AES-256-GCM under a ring of named keys. The newest key
// encrypts; every key in the ring decrypts, so keys rotate without a
// flag day. The ciphertext is bound to where it is stored (the project and
// variable name, as associated data), so a value copied into another row
// does not decrypt there.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

var (
	// ErrUnknownKey: the ciphertext names a key the ring does not hold.
	ErrUnknownKey = errors.New("secret: unknown key")
	// ErrDecrypt: wrong key, tampered ciphertext, or the wrong row.
	ErrDecrypt = errors.New("secret: cannot decrypt")
)

// Ring holds the keys. It is configured as SECRETS_KEYS, a comma-separated
// list of id:base64(32 bytes), the key that encrypts first.
type Ring struct {
	current string
	aeads   map[string]cipher.AEAD
}

var keyIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// UnmarshalText parses the SECRETS_KEYS form, for caarlos0/env. Errors
// never include key material.
func (r *Ring) UnmarshalText(b []byte) error {
	parsed, err := ParseRing(string(b))
	if err != nil {
		return err
	}
	*r = *parsed
	return nil
}

// ParseRing parses "id:base64key,id2:base64key2".
func ParseRing(s string) (*Ring, error) {
	r := &Ring{aeads: map[string]cipher.AEAD{}}
	for i, part := range strings.Split(s, ",") {
		kid, b64, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || !keyIDRe.MatchString(kid) {
			return nil, fmt.Errorf("key %d: want id:base64 with an id of letters, digits, - or _", i+1)
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("key %q: want 32 bytes, base64-encoded", kid)
		}
		if _, dup := r.aeads[kid]; dup {
			return nil, fmt.Errorf("key %q appears twice", kid)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		r.aeads[kid] = aead
		if i == 0 {
			r.current = kid
		}
	}
	return r, nil
}

// NewKey returns a fresh key in SECRETS_KEYS form, for bootstrap and dev.
func NewKey(id string) string {
	var k [32]byte
	_, _ = rand.Read(k[:]) // crypto/rand never fails on Linux
	return id + ":" + base64.StdEncoding.EncodeToString(k[:])
}

// Current is the id of the key Seal uses.
func (r *Ring) Current() string { return r.current }

// Seal encrypts plaintext under the current key, bound to context (e.g.
// "env/<project id>/<NAME>"). The nonce is prepended to the result.
func (r *Ring) Seal(plaintext []byte, context string) (ciphertext []byte, keyID string) {
	aead := r.aeads[r.current]
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return aead.Seal(nonce, nonce, plaintext, []byte(context)), r.current
}

// Open decrypts what Seal returned for the same context.
func (r *Ring) Open(ciphertext []byte, keyID, context string) ([]byte, error) {
	aead, ok := r.aeads[keyID]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, keyID)
	}
	if len(ciphertext) < aead.NonceSize() {
		return nil, ErrDecrypt
	}
	nonce, body := ciphertext[:aead.NonceSize()], ciphertext[aead.NonceSize():]
	plain, err := aead.Open(nil, nonce, body, []byte(context))
	if err != nil {
		return nil, ErrDecrypt
	}
	return plain, nil
}

// EnvContext is the associated data for a project's variable.
func EnvContext(projectID fmt.Stringer, name string) string {
	return "env/" + projectID.String() + "/" + name
}
