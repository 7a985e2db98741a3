package runtime

import (
	"testing"

	"github.com/zeitwork/zeitwork/internal/id"
)

// TestHostnamesAreUnique: instances created together (a deployment's
// replicas, two projects deployed at once) get different hostnames; with
// the first 8 hex digits of their UUIDv7 they all had the same one.
func TestHostnamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		h := hostname(id.New())
		if seen[h] {
			t.Fatalf("hostname %s given twice", h)
		}
		if len(h) > 64 {
			t.Fatalf("hostname %s is longer than the kernel allows", h)
		}
		seen[h] = true
	}
}
