package deployment

// SourceType is where a deployment's code came from.
type SourceType string

const (
	// SourceGitHub is a commit of the project's connected repository.
	SourceGitHub SourceType = "github"
	// SourceUpload is an archive a client uploaded to the object store.
	SourceUpload SourceType = "upload"
)

// SourceTypes are all of them.
var SourceTypes = []SourceType{SourceGitHub, SourceUpload}

// Source is what a deployment was built from; the fields that do not apply
// to its Type are empty.
type Source struct {
	Type          SourceType
	CommitSHA     string
	Ref           string // e.g. refs/heads/main
	CommitMessage string
	ArchiveKey    string
}
