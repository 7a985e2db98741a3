package certs

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/zeitwork/zeitwork/internal/secret"
)

// Values in the certificates table are sealed with the certificate key
// ring (CERTIFICATE_KEYS): what the table holds are private keys, and a
// copy of the database must not be a copy of every tenant's TLS identity.
// A sealed value is
//
//	zwsealed1:<key id>:<AES-GCM ciphertext, associated data = its storage key>
//
// so a value moved to another name does not open. A value without that
// prefix is one stored before sealing was turned on (a PEM document or
// JSON, never starting so): it is read as it is, and sealed the next time
// it is written or by `zeitwork secrets rotate`.
var sealedPrefix = []byte("zwsealed1:")

// ErrSealed: a sealed value and no ring that opens it.
var ErrSealed = errors.New("certificate storage: value is sealed with a key this process lacks")

// sealContext is the associated data of the value at key.
func sealContext(key string) string { return "certs/" + key }

// Seal seals value for key under keys' current key.
func Seal(keys *secret.Ring, key string, value []byte) []byte {
	ct, kid := keys.Seal(value, sealContext(key))
	out := make([]byte, 0, len(sealedPrefix)+len(kid)+1+len(ct))
	out = append(out, sealedPrefix...)
	out = append(out, kid...)
	out = append(out, ':')
	return append(out, ct...)
}

// SealedWith is the prefix of values sealed with key id kid.
func SealedWith(kid string) []byte {
	return append(append(append([]byte{}, sealedPrefix...), kid...), ':')
}

// Open returns the plaintext of a stored value: a sealed value opened with
// keys, or a plaintext one as it is.
func Open(keys *secret.Ring, key string, stored []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(stored, sealedPrefix)
	if !ok {
		return stored, nil
	}
	kid, ct, ok := bytes.Cut(rest, []byte{':'})
	if !ok {
		return nil, fmt.Errorf("%s: malformed sealed value", key)
	}
	if keys == nil {
		return nil, fmt.Errorf("%s: %w (set CERTIFICATE_KEYS)", key, ErrSealed)
	}
	plain, err := keys.Open(ct, string(kid), sealContext(key))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return plain, nil
}
