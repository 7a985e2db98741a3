package devenv

import (
	"fmt"
	"maps"
	"os"
	"strings"

	dev "github.com/zeitwork/zeitwork/deploy/dev"
)

// deps is deploy/dev/deps.env, the file scripts/deps.sh sources.
var deps = parseEnvFile(dev.Env)

// Environment is vars over the local dependencies' endpoints: what
// `zeitwork dev` and the tests parse their configuration from, so that
// they find the dependencies with no variables set and a variable set
// by the caller still wins.
func Environment(vars map[string]string) map[string]string {
	env := maps.Clone(deps)
	maps.Copy(env, vars)
	return env
}

// parseEnvFile reads KEY=value lines, values optionally in double quotes,
// ${KEY} expanded from earlier lines: the subset of shell that deps.env
// uses. A malformed file is a bug in the repository, hence the panic.
func parseEnvFile(text string) map[string]string {
	env := map[string]string{}
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(k, " \t\"'$") {
			panic(fmt.Sprintf("deploy/dev/deps.env:%d: not KEY=value: %q", n+1, line))
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		env[k] = os.Expand(v, func(name string) string {
			val, ok := env[name]
			if !ok {
				panic(fmt.Sprintf("deploy/dev/deps.env:%d: ${%s} is not defined above", n+1, name))
			}
			return val
		})
	}
	return env
}

// NodeName is the name of simulated node i of the platform named prefix:
// its network namespace, containerd namespace and state directory.
func NodeName(prefix string, i int) string {
	return fmt.Sprintf("%s-node%d", prefix, i)
}
