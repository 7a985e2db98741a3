package detect

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// TestPackageManager covers every manager and the precedence between
// packageManager and the lockfiles.
func TestPackageManager(t *testing.T) {
	start := `"scripts":{"start":"node server.js"}`
	for _, tc := range []struct {
		name    string
		src     fstest.MapFS
		install string // the install line of the Dockerfile
		setup   string // how the manager is provisioned ("" for npm and bun)
		reason  string
	}{
		{"npm from package-lock.json", srcTree("package.json", "{"+start+"}", "package-lock.json", npmLock),
			"RUN npm ci", "", "package-lock.json → npm"},
		{"npm from npm-shrinkwrap.json", srcTree("package.json", "{"+start+"}", "npm-shrinkwrap.json", npmLock),
			"RUN npm ci", "", "npm-shrinkwrap.json → npm"},
		{"npm without a lockfile", srcTree("package.json", "{"+start+"}"),
			"RUN npm install", "", "no npm lockfile: the install is not frozen"},
		{"pnpm 9 lockfile", srcTree("package.json", "{"+start+"}", "pnpm-lock.yaml", pnpmLock9),
			"RUN pnpm install --frozen-lockfile", "RUN corepack install --global pnpm@9", "pnpm-lock.yaml → pnpm"},
		{"pnpm 6.0 lockfile is pnpm 8", srcTree("package.json", "{"+start+"}", "pnpm-lock.yaml", "lockfileVersion: '6.0'\n"),
			"RUN pnpm install --frozen-lockfile", "RUN corepack install --global pnpm@8", "pnpm-lock.yaml → pnpm"},
		{"pnpm 5.4 lockfile is pnpm 7", srcTree("package.json", "{"+start+"}", "pnpm-lock.yaml", "lockfileVersion: 5.4\n"),
			"RUN pnpm install --frozen-lockfile", "RUN corepack install --global pnpm@7", "pnpm-lock.yaml → pnpm"},
		{"pnpm pinned", srcTree("package.json", `{`+start+`,"packageManager":"pnpm@9.15.0+sha512.76e2379760a4328ec4415815bcd6628dee727af3779aaa4c914e3944156c4299921a89f976381ee107d41f12cfa4b66681ca9c718f0668fa0831ed4c6d8ba56c"}`, "pnpm-lock.yaml", pnpmLock9),
			"RUN pnpm install --frozen-lockfile", "RUN corepack install\n", "corepack installs pnpm 9.15.0"},
		{"yarn classic", srcTree("package.json", "{"+start+"}", "yarn.lock", yarnClassic),
			"RUN yarn install --frozen-lockfile", "RUN corepack install --global yarn@1", "no .yarnrc.yml → yarn classic"},
		{"yarn berry by .yarnrc.yml", srcTree("package.json", "{"+start+"}", "yarn.lock", yarnClassic, ".yarnrc.yml", "nodeLinker: node-modules\n"),
			"RUN yarn install --immutable", "RUN corepack install --global yarn@stable", ".yarnrc.yml → yarn berry"},
		{"yarn berry by its lockfile format", srcTree("package.json", "{"+start+"}", "yarn.lock", yarnBerry),
			"RUN yarn install --immutable", "RUN corepack install --global yarn@stable", "yarn.lock has __metadata → yarn berry"},
		{"yarn berry pinned", srcTree("package.json", `{`+start+`,"packageManager":"yarn@4.5.3"}`, "yarn.lock", yarnBerry),
			"RUN yarn install --immutable", "RUN corepack install\n", "corepack installs yarn 4.5.3"},
		{"yarn 1 pinned beats .yarnrc.yml", srcTree("package.json", `{`+start+`,"packageManager":"yarn@1.22.22"}`, "yarn.lock", yarnClassic, ".yarnrc.yml", ""),
			"RUN yarn install --frozen-lockfile", "RUN corepack install\n", `package.json packageManager "yarn@1.22.22" → yarn`},
		{"bun.lock", srcTree("package.json", "{"+start+"}", "bun.lock", "{}"),
			"RUN bun install --frozen-lockfile", "", "bun.lock → bun"},
		{"bun.lockb", srcTree("package.json", "{"+start+"}", "bun.lockb", "\x00"),
			"RUN bun install --frozen-lockfile", "", "bun.lockb → bun"},

		// packageManager wins over a lockfile of another manager (Railpack
		// does the same); the install cannot be frozen without its own.
		{"packageManager beats package-lock.json", srcTree("package.json", `{`+start+`,"packageManager":"pnpm@9.1.0"}`, "package-lock.json", npmLock),
			"RUN pnpm install\n", "RUN corepack install\n", "packageManager wins over package-lock.json (as in Railpack)"},
		{"packageManager beats yarn.lock", srcTree("package.json", `{`+start+`,"packageManager":"npm@10.9.0"}`, "yarn.lock", yarnClassic),
			"RUN npm install\n", "", "packageManager wins over yarn.lock (as in Railpack)"},
		{"packageManager agrees with its lockfile", srcTree("package.json", `{`+start+`,"packageManager":"yarn@4.5.3"}`, "yarn.lock", yarnBerry, "package-lock.json", npmLock),
			"RUN yarn install --immutable", "RUN corepack install\n", `package.json packageManager "yarn@4.5.3" → yarn`},
		{"packageManager without an exact version", srcTree("package.json", `{`+start+`,"packageManager":"pnpm@latest"}`, "pnpm-lock.yaml", pnpmLock9),
			"RUN pnpm install --frozen-lockfile", "RUN corepack install --global pnpm@9", "packageManager pins no exact version, which corepack refuses"},
		{"unknown packageManager falls back to the lockfile", srcTree("package.json", `{`+start+`,"packageManager":"deno@2.0.0"}`, "pnpm-lock.yaml", pnpmLock9),
			"RUN pnpm install --frozen-lockfile", "RUN corepack install --global pnpm@9", `package.json packageManager "deno@2.0.0" names no manager we know; using the lockfile`},
		{"several lockfiles: pnpm, bun, yarn, npm", srcTree("package.json", "{"+start+"}", "package-lock.json", npmLock, "yarn.lock", yarnClassic, "pnpm-lock.yaml", pnpmLock9),
			"RUN pnpm install --frozen-lockfile", "", "also found yarn.lock, package-lock.json; pnpm-lock.yaml wins (pnpm, bun, yarn, npm, as in Railpack)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := Detect(tc.src, Options{BaseImages: testImages})
			if err != nil {
				t.Fatal(err)
			}
			df := string(plan.Dockerfile)
			if !strings.Contains(df, tc.install) {
				t.Errorf("no %q:\n%s", tc.install, df)
			}
			if tc.setup != "" && !strings.Contains(df, tc.setup) {
				t.Errorf("no %q:\n%s", tc.setup, df)
			}
			if !slices.Contains(plan.Reasons, tc.reason) {
				t.Errorf("missing reason %q in\n  %s", tc.reason, strings.Join(plan.Reasons, "\n  "))
			}
			checkDockerfile(t, plan.Dockerfile)
		})
	}
}

func TestNodeVersionSources(t *testing.T) {
	pkg := func(engines string) string {
		return `{"main":"index.js","engines":{"node":"` + engines + `"}}`
	}
	for _, tc := range []struct {
		name   string
		src    fstest.MapFS
		from   string
		reason string
	}{
		{".node-version beats .nvmrc and engines", srcTree("package.json", pkg("18"), ".nvmrc", "20", ".node-version", "22.11.0\n"),
			"node:22.11.0 AS deps", ".node-version → node 22.11.0"},
		{".nvmrc beats engines", srcTree("package.json", pkg("18"), ".nvmrc", "lts/iron"),
			"node:20 AS deps", ".nvmrc → node 20"},
		{"engines range", srcTree("package.json", pkg("^20.11.0")),
			"node:20 AS deps", `engines.node "^20.11.0" → node 20`},
		{"engines allowing the default", srcTree("package.json", pkg(">=18 <25")),
			"node:22 AS deps", `engines.node ">=18 <25" → node 22`},
		{"nonsense", srcTree("package.json", pkg("the newest please")),
			"node:22 AS deps", `engines.node "the newest please" not understood → node 22`},
		{"nvmrc nonsense", srcTree("package.json", pkg("20"), ".nvmrc", "system\n"),
			"node:22 AS deps", `.nvmrc "system" not understood → node 22`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := Detect(tc.src, Options{BaseImages: testImages})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(plan.Dockerfile), tc.from) {
				t.Errorf("no %q:\n%s", tc.from, plan.Dockerfile)
			}
			if !slices.Contains(plan.Reasons, tc.reason) {
				t.Errorf("missing reason %q in %q", tc.reason, plan.Reasons)
			}
		})
	}
}

func TestParsePackageJSONLenient(t *testing.T) {
	p, err := parsePackageJSON([]byte("\xef\xbb\xbf" + `{"main":7,"scripts":"x","dependencies":{"next":"15","bad":1},"engines":[],"workspaces":["packages/*"],"pnpm":{"patchedDependencies":{}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Main != "" || p.Scripts != nil || p.EnginesNode != "" {
		t.Errorf("wrong-typed fields should read as absent: %+v", p)
	}
	if _, ok := p.dependsOn("next"); !ok || !p.Workspaces || !p.PnpmPatches {
		t.Errorf("parsed %+v", p)
	}
	for _, bad := range []string{"", "[]", "null x", `{"a":}`} {
		if _, err := parsePackageJSON([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
