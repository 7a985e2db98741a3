package detect

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
)

// packageJSON is the part of package.json detection reads. Fields of the wrong
// type are treated as absent rather than as errors: npm tolerates a lot, and
// a "scripts" that is not an object should not stop a build that never needs
// it.
type packageJSON struct {
	Main           string
	Scripts        map[string]string
	Dependencies   map[string]string
	DevDeps        map[string]string
	PackageManager string
	EnginesNode    string
	Workspaces     bool
	PnpmPatches    bool
}

func parsePackageJSON(b []byte) (*packageJSON, error) {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, errors.New("not valid JSON: " + err.Error())
	}
	p := &packageJSON{
		Main:           jsonString(raw["main"]),
		Scripts:        jsonStringMap(raw["scripts"]),
		Dependencies:   jsonStringMap(raw["dependencies"]),
		DevDeps:        jsonStringMap(raw["devDependencies"]),
		PackageManager: strings.TrimSpace(jsonString(raw["packageManager"])),
	}
	var engines map[string]json.RawMessage
	if json.Unmarshal(raw["engines"], &engines) == nil {
		p.EnginesNode = strings.TrimSpace(jsonString(engines["node"]))
	}
	if w, ok := raw["workspaces"]; ok && !bytes.Equal(bytes.TrimSpace(w), []byte("null")) {
		p.Workspaces = true
	}
	var pnpm map[string]json.RawMessage
	if json.Unmarshal(raw["pnpm"], &pnpm) == nil {
		_, p.PnpmPatches = pnpm["patchedDependencies"]
	}
	return p, nil
}

func jsonString(r json.RawMessage) string {
	var s string
	if json.Unmarshal(r, &s) != nil {
		return ""
	}
	return s
}

// jsonStringMap decodes an object of strings, skipping values of other types.
func jsonStringMap(r json.RawMessage) map[string]string {
	var m map[string]json.RawMessage
	if json.Unmarshal(r, &m) != nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
		}
	}
	return out
}

// script returns a script's command, trimmed; "" when absent.
func (p *packageJSON) script(name string) string {
	return strings.TrimSpace(p.Scripts[name])
}

// dependsOn says whether a package is a dependency or a dev dependency, and
// which, for the build log.
func (p *packageJSON) dependsOn(name string) (where string, ok bool) {
	if _, ok := p.Dependencies[name]; ok {
		return "dependencies", true
	}
	if _, ok := p.DevDeps[name]; ok {
		return "devDependencies", true
	}
	return "", false
}

// hasLifecycleScripts says whether installing runs the project's own scripts,
// which may need any file of the source (prisma generate, patch-package).
func (p *packageJSON) hasLifecycleScripts() bool {
	for _, s := range []string{"preinstall", "install", "postinstall", "prepare"} {
		if p.script(s) != "" {
			return true
		}
	}
	return false
}

// hasLocalDependencies says whether a dependency points into the source tree
// (file:, link:, portal:), which an install from the manifests alone lacks.
func (p *packageJSON) hasLocalDependencies() bool {
	for _, deps := range []map[string]string{p.Dependencies, p.DevDeps} {
		for _, v := range deps {
			for _, prefix := range []string{"file:", "link:", "portal:"} {
				if strings.HasPrefix(v, prefix) {
					return true
				}
			}
		}
	}
	return false
}
