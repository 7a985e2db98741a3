package detect

import (
	"fmt"
	"path"
	"strings"
)

// detectDockerfile finds the repository's own Dockerfile: the configured path,
// or ./Dockerfile. It wins over every framework.
func detectDockerfile(t *tree, configured string) (Plan, bool, error) {
	if configured == "" {
		if !t.isFile("Dockerfile") {
			return Plan{}, false, nil
		}
		return ownDockerfile(t, "Dockerfile", "found Dockerfile")
	}

	name, err := cleanDockerfilePath(configured)
	if err != nil {
		return Plan{}, false, err
	}
	if !t.isFile(name) {
		// Falling back to detection here would build something the user did
		// not ask for; say which file is missing instead.
		return Plan{}, false, fmt.Errorf("%w: the project's Dockerfile path %q is not a file in the source", ErrDockerfileNotFound, configured)
	}
	return ownDockerfile(t, name, fmt.Sprintf("using %s (project setting)", name))
}

func ownDockerfile(t *tree, name, reason string) (Plan, bool, error) {
	b, err := t.read(name)
	if err != nil {
		return Plan{}, false, err
	}
	return Plan{
		Kind:           KindDockerfile,
		Dockerfile:     b,
		DockerfilePath: name,
		Reasons:        []string{reason},
	}, true, nil
}

// cleanDockerfilePath turns the setting into an fs.FS path: "./docker/Dockerfile"
// and "/docker/Dockerfile" both mean docker/Dockerfile in the source root.
// Paths that leave the root are refused rather than clamped, so that a typo
// is not silently read as another file.
func cleanDockerfilePath(setting string) (string, error) {
	p := path.Clean(strings.TrimLeft(strings.TrimSpace(setting), "/"))
	if p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%w: the project's Dockerfile path %q is not a file inside the source root", ErrDockerfileNotFound, setting)
	}
	return p, nil
}
