package detect

import (
	"fmt"
	"regexp"
	"strings"
)

// nodeBuild is how to install a Node project's dependencies: the part of the
// Dockerfile shared by Next.js, Nuxt, single-page apps, plain Node, and the
// asset builds of Rails and Laravel (templates/node.tmpl).
type nodeBuild struct {
	Image    string // the Node base image
	BunImage string // set for bun projects: its binary is copied in

	PM        string // the command: npm, pnpm, yarn or bun
	YarnBerry bool
	// Corepack installs pnpm and yarn. CorepackInstall is its argument list:
	// "install" reads the exact version from packageManager, "install
	// --global pnpm@9" picks one from the lockfile when there is no pin.
	Corepack        bool
	CorepackInstall string

	// CopyFiles and CopyDirs are copied before the install so that the
	// installed layer is reused until they change; FullSource copies
	// everything instead, for installs that run the project's own scripts.
	CopyFiles  []string
	CopyDirs   []string
	FullSource bool

	Install string // the frozen install command
}

// run returns the command that runs a package.json script at build time.
func (n nodeBuild) run(script string) string { return n.PM + " run " + script }

// runtimeScript returns the exec form that runs a package.json script in the
// runtime image. npm is the script runner for npm, pnpm and yarn projects
// alike: it is in every Node image, while pnpm and yarn would have to be
// fetched by corepack at start, and running a script needs nothing else from
// them once node_modules exists (yarn berry is installed with node_modules
// for this reason).
func (n nodeBuild) runtimeScript(script string) []string {
	if n.PM == "bun" {
		return []string{"bun", "run", script}
	}
	return []string{"npm", "run", script}
}

// nodeRunner is the runtime for a plain file: node, or bun for bun projects.
func (n nodeBuild) nodeRunner() string {
	if n.PM == "bun" {
		return "bun"
	}
	return "node"
}

// packageManager is what packageManager and the lockfiles say.
type packageManager struct {
	name     string // npm, pnpm, yarn, bun
	berry    bool   // yarn 2 and later
	pinned   string // the exact version packageManager pins, or ""
	lockfile string // this manager's lockfile, "" if the source has none
}

// lockfiles in Railpack's order of precedence when several are present.
var lockfiles = []struct{ pm, file string }{
	{"pnpm", "pnpm-lock.yaml"},
	{"bun", "bun.lock"},
	{"bun", "bun.lockb"},
	{"yarn", "yarn.lock"},
	{"npm", "package-lock.json"},
	{"npm", "npm-shrinkwrap.json"},
}

// detectPackageManager follows Railpack (core/providers/node): package.json's
// packageManager, when it names a known manager, wins over the lockfiles,
// since it is the project's explicit choice and corepack enforces it on
// developers' machines; a lockfile of another manager is then most likely a
// leftover. Without it the lockfiles decide, pnpm before bun before yarn
// before npm.
func detectPackageManager(t *tree, pkg *packageJSON) (packageManager, []string) {
	var reasons []string
	var present []string
	lockOf := map[string]string{}
	for _, l := range lockfiles {
		if t.isFile(l.file) {
			present = append(present, l.file)
			if lockOf[l.pm] == "" {
				lockOf[l.pm] = l.file
			}
		}
	}

	var pm packageManager
	if field := pkg.PackageManager; field != "" {
		name, version, _ := strings.Cut(field, "@")
		version, _, _ = strings.Cut(version, "+") // drop corepack's "+sha512.…"
		switch name {
		case "npm", "pnpm", "yarn", "bun":
			pm.name = name
			reasons = append(reasons, fmt.Sprintf("package.json packageManager %q → %s", field, name))
			if exactSemver.MatchString(version) {
				pm.pinned = version
			} else if name == "pnpm" || name == "yarn" {
				reasons = append(reasons, "packageManager pins no exact version, which corepack refuses")
			}
			if len(present) > 0 && lockOf[name] == "" {
				reasons = append(reasons, fmt.Sprintf("packageManager wins over %s (as in Railpack)", present[0]))
			}
		default:
			reasons = append(reasons, fmt.Sprintf("package.json packageManager %q names no manager we know; using the lockfile", field))
		}
	}
	if pm.name == "" {
		switch {
		case len(present) == 0:
			pm.name = "npm"
		default:
			pm.name = lockfilePM(present[0])
			reasons = append(reasons, fmt.Sprintf("%s → %s", present[0], pm.name))
			if len(present) > 1 {
				reasons = append(reasons, fmt.Sprintf("also found %s; %s wins (pnpm, bun, yarn, npm, as in Railpack)", strings.Join(present[1:], ", "), present[0]))
			}
		}
	}
	pm.lockfile = lockOf[pm.name]
	if pm.lockfile == "" {
		reasons = append(reasons, fmt.Sprintf("no %s lockfile: the install is not frozen", pm.name))
	}

	if pm.name == "yarn" {
		switch {
		case pm.pinned != "":
			pm.berry = !strings.HasPrefix(pm.pinned, "1.")
		case t.isFile(".yarnrc.yml"):
			pm.berry = true
			reasons = append(reasons, ".yarnrc.yml → yarn berry")
		case strings.Contains(string(t.head("yarn.lock", 4096)), "__metadata:"):
			pm.berry = true
			reasons = append(reasons, "yarn.lock has __metadata → yarn berry")
		}
		if !pm.berry && pm.pinned == "" {
			reasons = append(reasons, "no .yarnrc.yml → yarn classic")
		}
	}
	return pm, reasons
}

func lockfilePM(file string) string {
	for _, l := range lockfiles {
		if l.file == file {
			return l.pm
		}
	}
	return "npm"
}

var pnpmLockVersion = regexp.MustCompile(`lockfileVersion:\s*['"]?(\d+)(?:\.(\d+))?`)

// pnpmForLockfile picks the pnpm major that writes the lockfile's format, for
// projects that do not pin one. For the 9.0 format that is pnpm 9 rather than
// 10, which also writes it: pnpm 10 no longer runs dependencies' build
// scripts unless allowed, which breaks native modules of projects made with 9.
func pnpmForLockfile(head []byte) string {
	m := pnpmLockVersion.FindSubmatch(head)
	if m == nil {
		return "9"
	}
	switch v := string(m[1]) + "." + string(m[2]); {
	case strings.HasPrefix(v, "5.3"):
		return "6"
	case strings.HasPrefix(v, "5."):
		return "7"
	case strings.HasPrefix(v, "6."):
		return "8"
	default:
		return "9"
	}
}

// newNodeBuild works out the install of a Node project: manager, version,
// and what to copy first.
func newNodeBuild(t *tree, pkg *packageJSON, images BaseImages) (nodeBuild, []string) {
	pm, reasons := detectPackageManager(t, pkg)
	version, vreasons := nodeVersion(t, pkg)

	n := nodeBuild{Image: images.ref(images.Node, version), PM: pm.name}
	frozen := pm.lockfile != ""
	switch pm.name {
	case "npm":
		n.Install = "npm install"
		if frozen {
			n.Install = "npm ci"
		}
	case "pnpm":
		n.Corepack = true
		n.CorepackInstall = "install --global pnpm@" + pnpmForLockfile(t.head("pnpm-lock.yaml", 512))
		n.Install = "pnpm install"
		if frozen {
			n.Install = "pnpm install --frozen-lockfile"
		}
	case "yarn":
		n.Corepack = true
		n.YarnBerry = pm.berry
		n.CorepackInstall = "install --global yarn@1"
		n.Install = "yarn install"
		if pm.berry {
			n.CorepackInstall = "install --global yarn@stable"
			if frozen {
				n.Install = "yarn install --immutable"
			}
			reasons = append(reasons, "yarn berry installs with node_modules (YARN_NODE_LINKER), so that node runs the app without yarn")
		} else if frozen {
			n.Install = "yarn install --frozen-lockfile"
		}
	case "bun":
		v := defaultBunVersion
		if pm.pinned != "" {
			v = pm.pinned
		}
		n.BunImage = images.ref(images.Bun, v)
		n.Install = "bun install"
		if frozen {
			n.Install = "bun install --frozen-lockfile"
		}
	}
	if n.Corepack && pm.pinned != "" {
		n.CorepackInstall = "install"
		reasons = append(reasons, fmt.Sprintf("corepack installs %s %s", pm.name, pm.pinned))
	}

	full := ""
	switch {
	case pkg.hasLifecycleScripts():
		full = "package.json has install scripts"
	case pkg.Workspaces:
		full = "package.json declares workspaces"
	case strings.Contains(string(t.head("pnpm-workspace.yaml", 64<<10)), "packages:"):
		full = "pnpm-workspace.yaml lists packages"
	case pkg.hasLocalDependencies():
		full = "package.json has file: or link: dependencies"
	case pkg.PnpmPatches:
		full = "package.json patches dependencies"
	}
	if full != "" {
		n.FullSource = true
		reasons = append(reasons, "installing from the whole source: "+full)
		return n, append(reasons, vreasons...)
	}
	n.CopyFiles = []string{"package.json"}
	if pm.lockfile != "" {
		n.CopyFiles = append(n.CopyFiles, pm.lockfile)
	}
	for _, f := range []string{".npmrc", ".yarnrc", ".yarnrc.yml", ".pnpmfile.cjs", "pnpm-workspace.yaml", "bunfig.toml"} {
		if t.isFile(f) {
			n.CopyFiles = append(n.CopyFiles, f)
		}
	}
	for _, d := range []string{".yarn", "patches"} {
		if t.isDir(d) {
			n.CopyDirs = append(n.CopyDirs, d)
		}
	}
	return n, append(reasons, vreasons...)
}

// nodeVersion picks the Node version: .node-version, then .nvmrc, then
// package.json engines.node, then the default. The version files come first
// because they name the version the developers actually run, where engines
// is usually a compatibility range.
func nodeVersion(t *tree, pkg *packageJSON) (string, []string) {
	for _, f := range []string{".node-version", ".nvmrc"} {
		b := t.head(f, 256)
		if b == nil {
			continue
		}
		if v, ok := nodeVersionFile(string(b)); ok {
			return v, []string{fmt.Sprintf("%s → node %s", f, v)}
		}
		return defaultNodeVersion, []string{fmt.Sprintf("%s %q not understood → node %s", f, firstLine(string(b)), defaultNodeVersion)}
	}
	if pkg != nil && pkg.EnginesNode != "" {
		if v, ok := nodeEngines(pkg.EnginesNode); ok {
			return v, []string{fmt.Sprintf("engines.node %q → node %s", pkg.EnginesNode, v)}
		}
		return defaultNodeVersion, []string{fmt.Sprintf("engines.node %q not understood → node %s", pkg.EnginesNode, defaultNodeVersion)}
	}
	return defaultNodeVersion, []string{"no Node version given → node " + defaultNodeVersion + " (LTS)"}
}
