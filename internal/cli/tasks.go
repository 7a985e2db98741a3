package cli

import (
	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/domains"
	"github.com/zeitwork/zeitwork/internal/operator"
	"github.com/zeitwork/zeitwork/internal/queue"
)

// Every task kind of the platform, declared once so that whichever role
// leads the queue can rescue the tasks of a role that died mid-task (see
// queue.Rescuable).
func init() {
	queue.Rescuable[build.Task](build.RescueAfter)
	// Operators work these and lead the queue: their own workers' timeouts
	// decide; the stand-ins only serve the builders, which never lead.
	queue.Rescuable[operator.DeployTask](0)
	queue.Rescuable[deployment.RollbackTask](0)
	queue.Rescuable[domains.VerifyTask](0)
}
