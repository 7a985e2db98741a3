package detect_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/zeitwork/zeitwork/internal/builder"
	"github.com/zeitwork/zeitwork/internal/detect"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// fakeNextBuild stands in for `next build` (no package registry is needed):
// like Next.js, it writes .next/static, and .next/standalone with a server
// and the traced modules only when asked for standalone output, unless the
// app's config says otherwise (here: an "export" file, as output: "export"
// would). It also leaves a development dependency in node_modules.
const fakeNextBuild = `
const fs = require("fs");
const w = (p, s) => { fs.mkdirSync(require("path").dirname(p), { recursive: true }); fs.writeFileSync(p, s); };
w("node_modules/devonly/index.js", "dev dependency");
w("node_modules/.bin/next", "#!/bin/sh\n");
w(".next/static/chunk.js", "chunk");
w(".next/BUILD_ID", "id");
if (process.env.NEXT_PRIVATE_STANDALONE && !fs.existsSync("export")) {
  w(".next/standalone/server.js", "standalone server");
  w(".next/standalone/data/content.txt", "read at run time");
  w(".next/standalone/package.json", "{}");
  w(".next/standalone/.next/BUILD_ID", "id");
  w(".next/standalone/node_modules/traced/index.js", "traced");
}
`

// TestNextImageStandaloneOrWholeApp builds the generated Next.js Dockerfile
// with BuildKit and reads the pushed image's files: a build that makes
// standalone output yields the standalone server, its static files and the
// app's own files, without node_modules beyond what was traced; a build
// that makes none (output: "export") still succeeds with the whole app.
func TestNextImageStandaloneOrWholeApp(t *testing.T) {
	reg := testenv.Registry(t)
	kit := builder.BuildKit{Addr: testenv.Buildkit(t)}
	images := detect.WithRegistry(reg)
	nodeImage := reg + "/library/node:22-bookworm-slim"
	requireImage(t, nodeImage)

	for _, tc := range []struct {
		name   string
		extra  map[string]string
		want   []string
		absent []string
	}{
		{
			name: "standalone",
			want: []string{"app/server.js", "app/.zeitwork-standalone", "app/.next/static/chunk.js",
				"app/node_modules/traced/index.js", "app/data/content.txt", "app/public/robots.txt", "app/next.config.js"},
			absent: []string{"app/node_modules/devonly/index.js", "app/.next/standalone/server.js"},
		},
		{
			name:  "no standalone output: the whole app",
			extra: map[string]string{"export": ""},
			want: []string{"app/node_modules/devonly/index.js", "app/node_modules/.bin/next", "app/.next/static/chunk.js",
				"app/data/content.txt", "app/build.js"},
			absent: []string{"app/.zeitwork-standalone"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{
				"package.json":      `{"name":"x","scripts":{"build":"node build.js","start":"next start"}}`,
				"package-lock.json": `{"name":"x","lockfileVersion":3,"requires":true,"packages":{"":{"name":"x"}}}`,
				"next.config.js":    "module.exports = {}\n",
				"build.js":          fakeNextBuild,
				"data/content.txt":  "read at run time",
				"server.js":         "the app's own server.js, not started by next start",
				"public/robots.txt": "User-agent: *",
			}
			for k, v := range tc.extra {
				files[k] = v
			}
			dir := t.TempDir()
			for p, content := range files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, p), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			plan, err := detect.Detect(os.DirFS(dir), detect.Options{BaseImages: images})
			if err != nil {
				t.Fatal(err)
			}
			if plan.Kind != detect.KindNextJS {
				t.Fatalf("detected %s, want nextjs", plan.Kind)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var log strings.Builder
			img, err := kit.Build(ctx, builder.Request{
				ContextDir: dir, Dockerfile: plan.Dockerfile, DockerIgnore: plan.DockerIgnore,
				Repository: "zeitwork-test/next-" + id.New().String()[24:], Tag: "1",
				Registry: builder.Registry{Host: reg, Insecure: true},
			}, &log)
			if err != nil {
				t.Fatalf("build: %v\n%s\n%s", err, plan.Dockerfile, log.String())
			}
			got := imageFiles(t, img.Repository+"@"+img.Digest)
			if h, ok := got["app/server.js"]; ok && tc.name == "standalone" && h.Size != int64(len("standalone server")) {
				t.Errorf("app/server.js is not the standalone server (%d bytes)", h.Size)
			}
			for _, p := range tc.want {
				h, ok := got[p]
				if !ok {
					t.Errorf("image lacks %s", p)
					continue
				}
				if h.Uid != 1000 {
					t.Errorf("%s owned by uid %d, want node (1000)", p, h.Uid)
				}
			}
			for _, p := range tc.absent {
				if _, ok := got[p]; ok {
					t.Errorf("image has %s", p)
				}
			}
			if t.Failed() {
				var names []string
				for n := range got {
					if strings.HasPrefix(n, "app/") {
						names = append(names, n)
					}
				}
				slices.Sort(names)
				t.Logf("files under /app: %s", strings.Join(names, " "))
			}
		})
	}
}

func requireImage(t *testing.T, ref string) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := remote.Head(r, remote.WithContext(ctx)); err != nil {
		testenv.Unavailable(t, "base image "+ref+" (scripts/base-images.sh makes it)", err)
	}
}

// imageFiles lists the image's flattened file system by path.
func imageFiles(t *testing.T, ref string) map[string]*tar.Header {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(h.Name, "/")] = h
	}
}
