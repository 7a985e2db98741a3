package edge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestH2SpecConformance runs h2spec, the HTTP/2 conformance suite (RFC
// 7540/9113 and HPACK, every test case including the strict ones),
// against the edge's own HTTP/2 server: every case must pass.
//
// Its requests go to an app that reads the whole request body before it
// answers, so a stream stays open until the client ends it: the cases
// that send frames on an open stream find it open, however fast the
// answer would otherwise be.
func TestH2SpecConformance(t *testing.T) { forEachH2Path(t, testH2SpecConformance) }

func testH2SpecConformance(t *testing.T, path string) {
	bin := testenv.Binary(t, "h2spec")
	s := newStage(t, path, 5*time.Second)
	s.app(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "read %d bytes\n", n)
	}))
	// h2spec names the host it connects to in :authority.
	s.routes.Store(TableOf(map[string]Route{"localhost": {ProjectID: s.project, DeploymentID: id.New(), Backends: s.backends}}))
	_, port, _ := net.SplitHostPort(s.edge.Listener.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-h", "localhost", "-p", port, "-t", "-k", "-S", "-o", "5").CombinedOutput()
	m := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindSubmatch(out)
	if err != nil || m == nil || string(m[4]) != "0" || string(m[1]) != string(m[2]) || len(m[1]) < 3 {
		t.Fatalf("h2spec: %v\n%s", err, out)
	}
	t.Logf("h2spec: %s", m[0])
}
