package cli

import (
	"errors"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/operator"
)

// placer is the operator's placement until the scheduler package lands:
// distinct nodes by free memory, skipping nodes that cannot fit one more.
func placer(nodes []db.Node, need operator.Need) ([]uuid.UUID, error) {
	var out []uuid.UUID
	avoid := map[uuid.UUID]bool{}
	for _, a := range need.Avoid {
		avoid[a] = true
	}
	for _, n := range nodes {
		if len(out) == need.Instances {
			break
		}
		if !avoid[n.ID] && n.FreeCpuMillis >= need.CPUMillis && n.FreeMemoryMb >= need.MemoryMB {
			out = append(out, n.ID)
		}
	}
	if len(out) < need.Instances {
		return nil, errors.New("not enough nodes with room")
	}
	return out, nil
}
