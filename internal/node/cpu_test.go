package node_test

import (
	"testing"

	"github.com/zeitwork/zeitwork/internal/node"
)

func TestCPURequest(t *testing.T) {
	for limit, want := range map[int32]int32{1: 1, 10: 3, 100: 25, 250: 63, 1000: 250, 64_000: 16_000} {
		if got := node.CPURequest(limit); got != want {
			t.Errorf("CPURequest(%d) = %d, want %d", limit, got, want)
		}
	}
}
