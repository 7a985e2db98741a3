package cli

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/dbrole"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestManagementAPITakesOnlyItsToken: `zeitwork operator`, given every
// token of the platform, opens its management API to MANAGEMENT_TOKEN
// only — the node-proxy token the edges hold and the node API token the
// nodes hold are refused. It runs as the operator's own database user:
// starting (registration, the task queue, its loops) and the management
// API's reads need no more than the operator's grants.
func TestManagementAPITakesOnlyItsToken(t *testing.T) {
	url := testdb.As(t, testdb.NewURL(t), dbrole.Operator)
	addr := testenv.ReservedAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errOut testenv.Buffer
	go func() {
		done <- Main(ctx, []string{"operator"}, Env{Environ: []string{
			"DATABASE_URL=" + url, "OPERATOR_ADDR=" + addr, "LOG_LEVEL=warn",
			"CLUSTER_TOKEN=node-api-token", "NODE_PROXY_TOKEN=node-proxy-token", "MANAGEMENT_TOKEN=management-token",
		}, Stdout: &out, Stderr: &errOut})
	}()
	defer func() {
		cancel()
		select {
		case code := <-done:
			if code != ExitOK {
				t.Errorf("operator exited %d after stop:\n%s", code, errOut.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("operator did not stop")
		}
		if strings.Contains(errOut.String(), "permission denied") {
			t.Errorf("the operator was refused a table:\n%s", errOut.String())
		}
	}()
	images := func(token string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v1/images", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(30 * time.Second)
	for images("management-token") != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("the management API never answered with its token\n%s", errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, token := range []string{"node-proxy-token", "node-api-token", ""} {
		if got := images(token); got != 401 {
			t.Errorf("management API with %q: %d, want 401", token, got)
		}
	}
}
