package detect

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	digest "github.com/opencontainers/go-digest"
)

// stubResolver answers BuildKit's base image lookups with an empty image,
// so that the conversion runs offline.
type stubResolver struct{}

func (stubResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Env":["PATH=/usr/local/bin:/usr/bin:/bin"]}}`)
	return ref, digest.FromBytes(cfg), cfg, nil
}

// checkDockerfile parses a generated Dockerfile with BuildKit's own parser,
// converts it to LLB the way a build would (base images stubbed), and fails
// on any error or lint warning.
func checkDockerfile(t testing.TB, df []byte) {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(df))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, df)
	}
	for _, w := range res.Warnings {
		t.Errorf("parser warning: %s\n%s", w.Short, df)
	}
	nodes := res.AST.Children
	if len(nodes) == 0 || !strings.EqualFold(nodes[0].Value, "from") {
		t.Fatalf("first instruction is not FROM\n%s", df)
	}
	last := ""
	for _, n := range nodes {
		switch v := strings.ToLower(n.Value); v {
		case "from":
			last = ""
		case "cmd", "entrypoint":
			last = v
		}
	}
	if last == "" {
		t.Fatalf("final stage has no CMD or ENTRYPOINT\n%s", df)
	}

	sm := llb.NewSourceMap(nil, "Dockerfile", "Dockerfile", df)
	sm.Definition = &llb.Definition{}
	lint, err := dockerfile2llb.DockerfileLint(context.Background(), df, dockerfile2llb.ConvertOpt{
		MetaResolver: stubResolver{},
		SourceMap:    sm,
	})
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	if lint.Error != nil {
		t.Fatalf("BuildKit refuses it: %s\n%s", lint.Error.Message, df)
	}
	for _, w := range lint.Warnings {
		t.Errorf("lint %s: %s (line %v)\n", w.RuleName, w.Detail, w.Location)
	}
}
