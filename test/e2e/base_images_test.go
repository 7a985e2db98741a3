package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	bk "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/tonistiigi/fsutil"
	"golang.org/x/sync/errgroup"

	"github.com/zeitwork/zeitwork/internal/detect"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestBaseImagesBuildDetectedApps builds what the detector generates for a
// Node server (npm, pnpm and yarn), a Go module and a static site, with the
// base images that scripts/base-images.sh made on this machine, and runs each
// result: a probe stage appended to the generated Dockerfile starts from the app's runtime
// (or build) stage and writes what it saw to /probe.
func TestBaseImagesBuildDetectedApps(t *testing.T) {
	reg := testenv.Registry(t)
	addr := testenv.Buildkit(t)
	images := detect.WithRegistry(reg)
	goMinor := regexp.MustCompile(`^go(1\.\d+)`).FindStringSubmatch(runtime.Version())
	if goMinor == nil {
		t.Fatalf("cannot read the Go release from %q", runtime.Version())
	}

	for _, c := range []struct {
		name  string
		kind  detect.Kind
		files map[string]string
		probe string   // appended to the generated Dockerfile; must leave /probe in stage zw-probe
		want  []string // each a regexp matching a whole line of /probe
	}{{
		name: "node",
		kind: detect.KindNode,
		files: map[string]string{
			"package.json":      `{"name": "zw-probe", "version": "1.0.0", "scripts": {"start": "node server.js"}}`,
			"package-lock.json": `{"name": "zw-probe", "version": "1.0.0", "lockfileVersion": 3, "requires": true, "packages": {"": {"name": "zw-probe", "version": "1.0.0"}}}`,
			"server.js":         `require("http").createServer((q, s) => s.end("hi")).listen(process.env.PORT)`,
		},
		probe: `FROM runtime AS zw-probe
RUN { node -e 'console.log(1+1)' && npm --version && npx --version && node --version && id -un; } > /tmp/probe
`,
		want: []string{`2`, `10\.\d+\.\d+`, `10\.\d+\.\d+`, `v22\.\d+\.\d+`, `node`},
	}, {
		// pnpm and yarn come through corepack, which checks the npm registry's
		// signatures: the node image made here turns that check off
		// (scripts/base-images.sh), since the metadata reaching these
		// machines carries none. The lockfiles were made here with
		// pnpm 9.15.9 and yarn 1.22.22 from the npm registry.
		name: "pnpm",
		kind: detect.KindNode,
		files: map[string]string{
			"package.json":   `{"name": "zw-probe-pnpm", "version": "1.0.0", "packageManager": "pnpm@9.15.9", "scripts": {"start": "node server.js"}, "dependencies": {"ms": "2.1.3"}}`,
			"pnpm-lock.yaml": pnpmLock,
			"server.js":      msServer,
		},
		probe: `FROM runtime AS zw-probe
RUN { node -e 'console.log(require("ms")(60000))' && test -L node_modules/ms && echo linked; } > /tmp/probe
`,
		want: []string{`1m`, `linked`}, // pnpm's layout: node_modules/ms links into .pnpm
	}, {
		name: "yarn",
		kind: detect.KindNode,
		files: map[string]string{
			"package.json": `{"name": "zw-probe-yarn", "version": "1.0.0", "scripts": {"start": "node server.js"}, "dependencies": {"ms": "2.1.3"}}`,
			"yarn.lock":    yarnLock,
			"server.js":    msServer,
		},
		probe: `FROM runtime AS zw-probe
RUN { node -e 'console.log(require("ms")(60000))' && test -f node_modules/.yarn-integrity && echo yarn; } > /tmp/probe
`,
		want: []string{`1m`, `yarn`},
	}, {
		// Yarn 2+ comes from repo.yarnpkg.com by default, which these
		// machines cannot reach: corepack takes it from the npm registry in
		// the node image made here. Lockfile made here with yarn 4.18.1.
		name: "yarn-berry",
		kind: detect.KindNode,
		files: map[string]string{
			"package.json": `{"name": "zw-probe-berry", "version": "1.0.0", "packageManager": "yarn@4.18.1", "scripts": {"start": "node server.js"}, "dependencies": {"ms": "2.1.3"}}`,
			"yarn.lock":    yarnBerryLock,
			"server.js":    msServer,
		},
		probe: `FROM runtime AS zw-probe
RUN { node -e 'console.log(require("ms")(60000))' && test -d node_modules/ms && test ! -L node_modules/ms && echo node-modules; } > /tmp/probe
`,
		want: []string{`1m`, `node-modules`}, // berry installed with the node_modules linker
	}, {
		name: "go",
		kind: detect.KindGo,
		files: map[string]string{
			"go.mod":  "module example.com/hello\n\ngo " + goMinor[1] + "\n",
			"main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from a module\") }\n",
		},
		probe: `FROM build AS zw-probe
RUN { /out/app && go env GOVERSION; } > /tmp/probe
`,
		want: []string{`hello from a module`, regexp.QuoteMeta(strings.Fields(runtime.Version())[0])},
	}, {
		name:  "static",
		kind:  detect.KindStatic,
		files: map[string]string{"index.html": "<h1>served by the mirrored caddy</h1>\n"},
		// A network of its own: the probe's port is nobody else's.
		probe: `FROM runtime AS zw-probe
RUN --network=none caddy run --config /etc/caddy/Caddyfile --adapter caddyfile & \
    for i in $(seq 100); do wget -q -O /tmp/probe "http://127.0.0.1:$PORT/index.html" && break; sleep 0.1; done; \
    id -un >> /tmp/probe
`,
		want: []string{`<h1>served by the mirrored caddy</h1>`, `web`},
	}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range c.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			plan, err := detect.Detect(os.DirFS(dir), detect.Options{BaseImages: images})
			if err != nil {
				t.Fatal(err)
			}
			if plan.Kind != c.kind {
				t.Fatalf("detected %s, want %s", plan.Kind, c.kind)
			}
			requireBaseImages(t, reg, plan.Dockerfile)

			// The nonce keeps BuildKit from answering the probe from its cache:
			// it runs against whatever the registry holds now.
			probe := strings.Replace(c.probe, "\nRUN ", fmt.Sprintf("\nENV ZW_PROBE_NONCE=%d\nRUN ", time.Now().UnixNano()), 1)
			dockerfile := string(plan.Dockerfile) + "\n" + probe + "\nFROM scratch\nCOPY --from=zw-probe /tmp/probe /probe\n"
			out := buildToDir(t, addr, dir, dockerfile)
			got, err := os.ReadFile(filepath.Join(out, "probe"))
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimRight(string(got), "\n"), "\n")
			if len(lines) != len(c.want) {
				t.Fatalf("probe wrote %q, want lines matching %q", got, c.want)
			}
			for i, w := range c.want {
				if !regexp.MustCompile(`^` + w + `$`).MatchString(lines[i]) {
					t.Errorf("probe line %d = %q, want %q", i+1, lines[i], w)
				}
			}
		})
	}
}

// msServer answers with the one dependency of the pnpm and yarn probes.
const msServer = `require("http").createServer((q, s) => s.end(require("ms")(60000))).listen(process.env.PORT)`

const pnpmLock = `lockfileVersion: '9.0'

settings:
  autoInstallPeers: true
  excludeLinksFromLockfile: false

importers:

  .:
    dependencies:
      ms:
        specifier: 2.1.3
        version: 2.1.3

packages:

  ms@2.1.3:
    resolution: {integrity: sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA==}

snapshots:

  ms@2.1.3: {}
`

const yarnLock = `# THIS IS AN AUTOGENERATED FILE. DO NOT EDIT THIS FILE DIRECTLY.
# yarn lockfile v1


ms@2.1.3:
  version "2.1.3"
  resolved "https://registry.yarnpkg.com/ms/-/ms-2.1.3.tgz#574c8138ce1d2b5861f0b44579dbadd60c6615b2"
  integrity sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA==
`

const yarnBerryLock = `# This file is generated by running "yarn install" inside your project.
# Manual changes might be lost - proceed with caution!

__metadata:
  version: 10
  cacheKey: 10c0

"ms@npm:2.1.3":
  version: 2.1.3
  resolution: "ms@npm:2.1.3"
  checksum: 10c0/d924b57e7312b3b63ad21fc5b3dc0af5e78d61a1fc7cfb5457edaf26326bf62be5307cc87ffb6862ef1c2b33b0233cdb5d4f01c4c958cc0d660948b65a287a48
  languageName: node
  linkType: hard

"zw-probe-berry@workspace:.":
  version: 0.0.0-use.local
  resolution: "zw-probe-berry@workspace:."
  dependencies:
    ms: "npm:2.1.3"
  languageName: unknown
  linkType: soft
`

// requireBaseImages checks that every image the Dockerfile starts from is in
// the local registry: a missing one fails under CI=true and skips elsewhere.
func requireBaseImages(t *testing.T, reg string, dockerfile []byte) {
	t.Helper()
	for _, m := range regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllSubmatch(dockerfile, -1) {
		ref := string(m[1])
		if !strings.HasPrefix(ref, reg+"/") {
			continue // a stage or scratch
		}
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		_, err = remote.Head(r, remote.WithContext(ctx))
		cancel()
		if err != nil {
			testenv.Unavailable(t, "base image "+ref+" (scripts/base-images.sh makes it)", err)
		}
	}
}

// buildToDir builds dockerfile with contextDir as its context and returns a
// directory holding the last stage's files.
func buildToDir(t *testing.T, addr, contextDir, dockerfile string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	c, err := bk.New(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	dfDir, out := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dfDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	contextFS, err := fsutil.NewFS(contextDir)
	if err != nil {
		t.Fatal(err)
	}
	dockerfileFS, err := fsutil.NewFS(dfDir)
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	display, err := progressui.NewDisplay(&progress, progressui.PlainMode)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *bk.SolveStatus)
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		_, err := c.Solve(ectx, nil, bk.SolveOpt{
			Frontend:      "dockerfile.v0",
			FrontendAttrs: map[string]string{"filename": "Dockerfile"},
			LocalMounts:   map[string]fsutil.FS{"context": contextFS, "dockerfile": dockerfileFS},
			Exports:       []bk.ExportEntry{{Type: bk.ExporterLocal, OutputDir: out}},
		}, ch)
		return err
	})
	eg.Go(func() error {
		_, err := display.UpdateFrom(context.WithoutCancel(ectx), ch)
		return err
	})
	if err := eg.Wait(); err != nil {
		log := progress.String()
		if len(log) > 6000 {
			log = "…" + log[len(log)-6000:]
		}
		t.Fatalf("build: %v\n--- Dockerfile\n%s\n--- build log\n%s", err, dockerfile, log)
	}
	return out
}
