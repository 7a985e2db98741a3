package detect

import (
	"testing"
	"testing/fstest"
)

// FuzzDetect feeds Detect arbitrary manifests. It must never panic, and
// whatever it generates must be a Dockerfile BuildKit accepts, with the
// manifests' contents kept from breaking out of their place in it.
func FuzzDetect(f *testing.F) {
	f.Add(uint16(0xffff), nextStandard, "v20\n", `{"require":{"laravel/framework":"^11","php":"^8.2"}}`, "module x\ngo 1.22\n", "package main", "GEM\n  specs:\n    rails (7.1.0)\n")
	f.Add(uint16(0x0001), `{"main":"a\nRUN evil","scripts":{"start":"x\"]\nRUN evil"},"packageManager":"pnpm@9\nRUN evil"}`, "20\nRUN evil", "", "", "", "")
	f.Add(uint16(0x0102), `{"dependencies":{"vite":"1"},"scripts":{"build":"vite build"},"engines":{"node":">=18 <20 || ^22"}}`, "", "", "", "", "")
	f.Add(uint16(0x0404), `{`, "", "{", "module x\ntoolchain go1.23.4\n", "//go:build ignore\npackage main", "")
	f.Add(uint16(0x0808), `{"packageManager":"yarn@4.0.0","scripts":{"start":"next start"},"devDependencies":{"nuxt":3}}`, "lts/hydrogen", "", "", "", "RUBY VERSION\n   ruby 3.2.2p1\n")

	f.Fuzz(func(t *testing.T, which uint16, pkg, nvmrc, composer, gomod, gofile, gemlock string) {
		files := []struct {
			bit  uint16
			name string
			data string
		}{
			{1 << 0, "package.json", pkg},
			{1 << 1, ".nvmrc", nvmrc},
			{1 << 2, "composer.json", composer},
			{1 << 2, "artisan", ""},
			{1 << 3, "go.mod", gomod},
			{1 << 3, "main.go", gofile},
			{1 << 4, "cmd/" + gofile + "/main.go", gofile},
			{1 << 5, "Gemfile", gemlock},
			{1 << 5, "config/application.rb", "Rails::Application"},
			{1 << 6, "Gemfile.lock", gemlock},
			{1 << 7, "next.config.js", pkg},
			{1 << 8, "pnpm-lock.yaml", nvmrc},
			{1 << 9, "yarn.lock", nvmrc},
			{1 << 10, ".yarnrc.yml", ""},
			{1 << 11, "index.html", ""},
			{1 << 12, "nuxt.config.ts", ""},
			{1 << 13, ".ruby-version", nvmrc},
			{1 << 14, "bun.lock", ""},
		}
		src := fstest.MapFS{}
		for _, f := range files {
			if which&f.bit != 0 {
				src[f.name] = &fstest.MapFile{Data: []byte(f.data)}
			}
		}
		plan, err := Detect(src, Options{BaseImages: testImages})
		if err != nil {
			return
		}
		checkDockerfile(t, plan.Dockerfile)
	})
}
