package detect

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

type railsData struct {
	Image           string
	Node            *nodeBuild // nil without package.json
	BuildPackages   []string
	RuntimePackages []string
	CopyFiles       []string // copied before bundle install
	FullSource      bool     // the Gemfile needs more than itself (path:, gemspec)
	Frozen          bool     // Gemfile.lock present: bundle in deployment mode
	Bootsnap        bool
	Assets          bool
	// AssetsSecret is the throwaway secret assets:precompile runs with; Rails
	// 7.1 and later understand SECRET_KEY_BASE_DUMMY, older ones need a value.
	AssetsSecret string
	Rails        string // ./bin/rails, or bundle exec rails without the binstub
	Thrust       bool
	Entrypoint   bool
	Port         int
}

var (
	gemfileLocal  = regexp.MustCompile(`(?m)^\s*(gemspec\b|gem\s.*\bpath:)`)
	lockRailsVers = regexp.MustCompile(`(?m)^    rails \((\d+)\.(\d+)`)
)

// gems is what Gemfile and Gemfile.lock say about the bundle.
type gems struct{ gemfile, lock []byte }

// uses says whether the bundle has a gem: a spec in Gemfile.lock, or a gem
// line in the Gemfile when there is no lock.
func (g gems) uses(name string) bool {
	q := regexp.QuoteMeta(name)
	if len(g.lock) > 0 {
		return regexp.MustCompile(`(?m)^    ` + q + ` \(`).Match(g.lock)
	}
	return regexp.MustCompile(`(?m)^\s*gem\s+["']` + q + `["']`).Match(g.gemfile)
}

func detectRails(t *tree, images BaseImages) (Plan, bool, error) {
	if !t.isFile("Gemfile") {
		return Plan{}, false, nil
	}
	if !t.isFile("config/application.rb") {
		t.noteNear("Gemfile without config/application.rb (Ruby, but not Rails)")
		return Plan{}, false, nil
	}
	gemfile, err := t.read("Gemfile")
	if err != nil {
		return Plan{}, false, err
	}
	lock, err := t.readOptional("Gemfile.lock")
	if err != nil {
		return Plan{}, false, err
	}
	app, err := t.read("config/application.rb")
	if err != nil {
		return Plan{}, false, err
	}
	g := gems{gemfile: gemfile, lock: lock}
	reasons := []string{"found Gemfile and config/application.rb"}
	switch {
	case g.uses("rails") || g.uses("railties"):
		reasons = append(reasons, "rails gem in the bundle")
	case bytes.Contains(app, []byte("Rails::Application")):
		reasons = append(reasons, "config/application.rb defines a Rails::Application")
	default:
		t.noteNear("Gemfile and config/application.rb without the rails gem")
		return Plan{}, false, nil
	}

	version, vreason := railsRubyVersion(t, gemfile, lock)
	reasons = append(reasons, vreason)

	d := railsData{
		Image:         images.ref(images.Ruby, version),
		Frozen:        lock != nil,
		FullSource:    gemfileLocal.Match(gemfile),
		Bootsnap:      g.uses("bootsnap"),
		Assets:        g.uses("propshaft") || g.uses("sprockets") || g.uses("jsbundling-rails") || g.uses("cssbundling-rails"),
		AssetsSecret:  "SECRET_KEY_BASE_DUMMY=1",
		Rails:         "./bin/rails",
		Thrust:        t.isFile("bin/thrust"),
		Entrypoint:    t.isFile("bin/docker-entrypoint"),
		Port:          DefaultPort,
		BuildPackages: []string{"build-essential", "git", "pkg-config", "libyaml-dev"},
		// jemalloc is what Rails' own Dockerfile preloads: it keeps a
		// long-running Ruby's memory from fragmenting.
		RuntimePackages: []string{"curl", "libjemalloc2"},
	}
	if d.Frozen {
		reasons = append(reasons, "Gemfile.lock → bundle install in deployment mode")
	} else {
		reasons = append(reasons, "no Gemfile.lock: bundle install is not frozen")
	}
	if m := lockRailsVers.FindSubmatch(lock); m != nil {
		maj, _ := strconv.Atoi(string(m[1]))
		mnr, _ := strconv.Atoi(string(m[2]))
		if maj < 7 || maj == 7 && mnr < 1 {
			d.AssetsSecret = "SECRET_KEY_BASE=assets-precompile-placeholder"
		}
	}
	if !t.isFile("bin/rails") {
		d.Rails = "bundle exec rails"
	}
	d.CopyFiles = []string{"Gemfile"}
	for _, f := range []string{"Gemfile.lock", ".ruby-version"} {
		if t.isFile(f) {
			d.CopyFiles = append(d.CopyFiles, f)
		}
	}
	if d.FullSource {
		reasons = append(reasons, "Gemfile has path: gems or gemspec: bundling from the whole source")
	}

	for _, dep := range []struct {
		gem            string
		build, runtime []string
	}{
		{"pg", []string{"libpq-dev"}, []string{"postgresql-client"}},
		{"mysql2", []string{"default-libmysqlclient-dev"}, []string{"default-mysql-client"}},
		{"trilogy", nil, []string{"default-mysql-client"}},
		{"sqlite3", []string{"libsqlite3-dev"}, []string{"sqlite3"}},
		{"ruby-vips", nil, []string{"libvips"}},
		{"mini_magick", nil, []string{"imagemagick"}},
	} {
		if g.uses(dep.gem) {
			d.BuildPackages = appendNew(d.BuildPackages, dep.build...)
			d.RuntimePackages = appendNew(d.RuntimePackages, dep.runtime...)
			reasons = append(reasons, fmt.Sprintf("%s gem → %s", dep.gem, strings.Join(append(append([]string{}, dep.build...), dep.runtime...), ", ")))
		}
	}

	pkg, err := t.packageJSON()
	if err != nil {
		return Plan{}, false, err
	}
	if pkg != nil {
		n, nreasons := newNodeBuild(t, pkg, images)
		d.Node = &n
		reasons = append(reasons, "package.json → node in the build stage for assets:precompile")
		reasons = append(reasons, nreasons...)
	}
	if d.Assets {
		reasons = append(reasons, "asset pipeline in the bundle → "+d.Rails+" assets:precompile")
	}
	if d.Thrust {
		reasons = append(reasons, "bin/thrust → Thruster on $PORT in front of Puma")
	} else {
		reasons = append(reasons, d.Rails+" server -p $PORT")
	}
	df, err := render("rails", d)
	return Plan{Dockerfile: df, Reasons: reasons}, err == nil, err
}

// railsRubyVersion reads .ruby-version, then Gemfile.lock's RUBY VERSION,
// then the Gemfile's ruby line: the first two are exact.
func railsRubyVersion(t *tree, gemfile, lock []byte) (string, string) {
	if b := t.head(".ruby-version", 256); b != nil {
		if v, ok := rubyVersion(string(b)); ok {
			return v, ".ruby-version → ruby " + v
		}
	}
	if v, ok := gemfileLockRubyVersion(lock); ok {
		return v, "Gemfile.lock → ruby " + v
	}
	if v, ok := gemfileRubyVersion(gemfile); ok {
		return v, "Gemfile → ruby " + v
	}
	return defaultRubyVersion, "no Ruby version given → ruby " + defaultRubyVersion
}

func appendNew(list []string, items ...string) []string {
	for _, it := range items {
		found := false
		for _, l := range list {
			found = found || l == it
		}
		if !found {
			list = append(list, it)
		}
	}
	return list
}
