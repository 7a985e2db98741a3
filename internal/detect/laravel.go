package detect

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

type laravelData struct {
	Image         string
	ComposerImage string
	Extensions    []string
	CopyFiles     []string // composer.json, composer.lock
	Node          *nodeBuild
	AssetsBuild   string
	Port          int
}

// laravelExtensions are installed on top of the PHP image's defaults: what
// Laravel's common drivers and queues need (install-php-extensions skips
// those already there).
var laravelExtensions = []string{"bcmath", "intl", "opcache", "pcntl", "pdo_mysql", "pdo_pgsql", "zip"}

var phpExtName = regexp.MustCompile(`^[a-z0-9_]+$`)

// minFrankenPHPMinor is the oldest PHP 8 minor FrankenPHP images exist for.
const minFrankenPHPMinor = 2

// detectLaravel builds with FrankenPHP: PHP inside Caddy, one process that is
// production grade without php-fpm and nginx under a supervisor, and the
// server Laravel Octane and Railpack use. `php artisan serve` and `php -S`
// are PHP's built-in development server, one request at a time.
func detectLaravel(t *tree, images BaseImages) (Plan, bool, error) {
	hasArtisan, hasComposer := t.isFile("artisan"), t.isFile("composer.json")
	if !hasComposer {
		if hasArtisan {
			t.noteNear("artisan without composer.json")
		}
		return Plan{}, false, nil
	}
	b, err := t.read("composer.json")
	if err != nil {
		return Plan{}, false, err
	}
	var composer struct {
		Require map[string]json.RawMessage `json:"require"`
	}
	if err := json.Unmarshal(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")), &composer); err != nil {
		if !hasArtisan {
			return Plan{}, false, nil // not our business: some other PHP project
		}
		return Plan{}, false, fmt.Errorf("composer.json: not valid JSON: %w", err)
	}
	if _, ok := composer.Require["laravel/framework"]; !ok || !hasArtisan {
		t.noteNear("composer.json without artisan and laravel/framework (PHP, but not Laravel)")
		return Plan{}, false, nil
	}
	reasons := []string{"found artisan and composer.json requiring laravel/framework"}

	version := defaultPHPVersion
	if c := jsonString(composer.Require["php"]); c != "" {
		if v, ok := phpVersion(c); ok {
			version = v
			reasons = append(reasons, fmt.Sprintf("composer.json php %q → PHP %s", c, v))
		}
		if maj, mnr := splitMajorMinor(version); maj < 8 || maj == 8 && mnr < minFrankenPHPMinor {
			return Plan{}, false, fmt.Errorf("composer.json requires PHP %q, and FrankenPHP, which serves generated Laravel images, needs PHP 8.%d or later: add a Dockerfile", c, minFrankenPHPMinor)
		}
	} else {
		reasons = append(reasons, "no PHP version required → PHP "+version)
	}

	exts := append([]string{}, laravelExtensions...)
	for name := range composer.Require {
		if e, ok := strings.CutPrefix(strings.ToLower(name), "ext-"); ok && phpExtName.MatchString(e) {
			exts = appendNew(exts, e)
		}
	}
	sort.Strings(exts)

	d := laravelData{
		Image:         images.ref(images.PHP, version),
		ComposerImage: images.ref(images.Composer, ""),
		Extensions:    exts,
		CopyFiles:     []string{"composer.json"},
		Port:          DefaultPort,
	}
	if t.isFile("composer.lock") {
		d.CopyFiles = append(d.CopyFiles, "composer.lock")
		reasons = append(reasons, "composer.lock → composer install from the lock")
	} else {
		reasons = append(reasons, "no composer.lock: composer install is not frozen")
	}

	pkg, err := t.packageJSON()
	if err != nil {
		return Plan{}, false, err
	}
	if pkg != nil && pkg.script("build") != "" {
		n, nreasons := newNodeBuild(t, pkg, images)
		d.Node = &n
		d.AssetsBuild = n.run("build")
		reasons = append(reasons, "package.json build script → assets built with "+d.AssetsBuild)
		reasons = append(reasons, nreasons...)
	}
	reasons = append(reasons, "FrankenPHP on $PORT; php artisan optimize at start")
	df, err := render("laravel", d)
	return Plan{Dockerfile: df, Reasons: reasons}, err == nil, err
}
