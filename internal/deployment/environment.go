package deployment

import "strings"

// Environment says which hosts a deployment takes when it is active.
type Environment string

const (
	// EnvironmentProduction deployments replace each other: the active one
	// is the project's, at <slug>.<apps-domain> and its custom domains.
	EnvironmentProduction Environment = "production"
	// EnvironmentPreview deployments are builds of a branch other than the
	// project's production branch. They answer only at
	// <deployment-id>.<apps-domain>, several at once (one per branch), and
	// never take the project's hosts.
	EnvironmentPreview Environment = "preview"
)

// Environments are all of them.
var Environments = []Environment{EnvironmentProduction, EnvironmentPreview}

// BranchRef is the git ref of branch, the form deployments record.
func BranchRef(branch string) string { return "refs/heads/" + branch }

// Branch is the branch the deployment was built from, "" when it was not
// built from one (an upload, a tag).
func (d Deployment) Branch() string {
	b, ok := strings.CutPrefix(d.Source.Ref, "refs/heads/")
	if !ok {
		return ""
	}
	return b
}
