package githubemu

import (
	"encoding/base64"
	"fmt"
	"time"
)

// The JSON objects below carry the fields of GitHub's own that a client is
// likely to read, under GitHub's names; the tests hold the names against
// go-github's types and @octokit/webhooks-examples.

type simpleUser struct {
	Login             string `json:"login"`
	ID                int64  `json:"id"`
	NodeID            string `json:"node_id"`
	AvatarURL         string `json:"avatar_url"`
	GravatarID        string `json:"gravatar_id"`
	URL               string `json:"url"`
	HTMLURL           string `json:"html_url"`
	ReposURL          string `json:"repos_url"`
	OrganizationsURL  string `json:"organizations_url"`
	ReceivedEventsURL string `json:"received_events_url"`
	Type              string `json:"type"`
	SiteAdmin         bool   `json:"site_admin"`
}

type fullUser struct {
	simpleUser
	Name      *string   `json:"name"`
	Email     *string   `json:"email"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type emailJSON struct {
	Email      string  `json:"email"`
	Primary    bool    `json:"primary"`
	Verified   bool    `json:"verified"`
	Visibility *string `json:"visibility"`
}

type repoJSON struct {
	ID            int64      `json:"id"`
	NodeID        string     `json:"node_id"`
	Name          string     `json:"name"`
	FullName      string     `json:"full_name"`
	Private       bool       `json:"private"`
	Owner         simpleUser `json:"owner"`
	HTMLURL       string     `json:"html_url"`
	Description   *string    `json:"description"`
	Fork          bool       `json:"fork"`
	URL           string     `json:"url"`
	ArchiveURL    string     `json:"archive_url"`
	CloneURL      string     `json:"clone_url"`
	DefaultBranch string     `json:"default_branch"`
	Visibility    string     `json:"visibility"`
	CreatedAt     any        `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	PushedAt      any        `json:"pushed_at"`
}

// shortRepoJSON is how installation events name repositories.
type shortRepoJSON struct {
	ID       int64  `json:"id"`
	NodeID   string `json:"node_id"`
	Name     string `json:"name"`
	FullName string `json:"full_name"`
	Private  bool   `json:"private"`
}

type installationJSON struct {
	ID                  int64             `json:"id"`
	Account             simpleUser        `json:"account"`
	RepositorySelection string            `json:"repository_selection"`
	AccessTokensURL     string            `json:"access_tokens_url"`
	RepositoriesURL     string            `json:"repositories_url"`
	HTMLURL             string            `json:"html_url"`
	AppID               int64             `json:"app_id"`
	AppSlug             string            `json:"app_slug,omitempty"`
	TargetID            int64             `json:"target_id"`
	TargetType          string            `json:"target_type"`
	Permissions         map[string]string `json:"permissions"`
	Events              []string          `json:"events"`
	CreatedAt           time.Time         `json:"created_at"`
	UpdatedAt           time.Time         `json:"updated_at"`
	SingleFileName      *string           `json:"single_file_name"`
	SuspendedAt         *time.Time        `json:"suspended_at"`
	SuspendedBy         *simpleUser       `json:"suspended_by"`
}

// epoch is when every object in the emulator was created; a fixed time
// keeps payloads reproducible.
var epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

var appPermissions = map[string]string{"contents": "read", "metadata": "read"}

func nodeID(kind string, id int64) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%02d:%s%d", len(kind), kind, id))
}

func (e *Emulator) simpleUser(u *User) simpleUser {
	api := e.apiBase()
	return simpleUser{
		Login: u.Login, ID: u.ID, NodeID: nodeID(u.kind(), u.ID),
		AvatarURL:         fmt.Sprintf("https://avatars.githubusercontent.com/u/%d?v=4", u.ID),
		URL:               api + "/users/" + u.Login,
		HTMLURL:           e.webBase() + "/" + u.Login,
		ReposURL:          api + "/users/" + u.Login + "/repos",
		OrganizationsURL:  api + "/users/" + u.Login + "/orgs",
		ReceivedEventsURL: api + "/users/" + u.Login + "/received_events",
		Type:              u.kind(),
	}
}

func (e *Emulator) fullUser(u *User) fullUser {
	return fullUser{simpleUser: e.simpleUser(u), Name: nullable(u.Name), Email: nullable(u.Email),
		CreatedAt: epoch, UpdatedAt: epoch}
}

// owner returns the user a repository belongs to; an owner not added with
// AddUser still gets a consistent object.
func (e *Emulator) owner(login string) *User {
	if u, ok := e.users[login]; ok {
		return u
	}
	return &User{Login: login, ID: int64(len(login))*1_000_000 + 7}
}

// repoJSON renders r; pushEvent selects the push payload's peculiarity of
// created_at and pushed_at as Unix seconds.
func (e *Emulator) repoJSON(r *Repository, pushEvent bool) repoJSON {
	api, web := e.apiBase(), e.webBase()
	visibility := "public"
	if r.Private {
		visibility = "private"
	}
	var created, pushed any = epoch, epoch
	if pushEvent {
		created, pushed = epoch.Unix(), time.Now().Unix()
	}
	return repoJSON{
		ID: r.ID, NodeID: nodeID("Repository", r.ID), Name: r.Name, FullName: r.FullName(),
		Private: r.Private, Owner: e.simpleUser(e.owner(r.Owner)),
		HTMLURL: web + "/" + r.FullName(), URL: api + "/repos/" + r.FullName(),
		ArchiveURL:    api + "/repos/" + r.FullName() + "/{archive_format}{/ref}",
		CloneURL:      web + "/" + r.FullName() + ".git",
		DefaultBranch: r.DefaultBranch, Visibility: visibility,
		CreatedAt: created, UpdatedAt: epoch, PushedAt: pushed,
	}
}

func shortRepo(r *Repository) shortRepoJSON {
	return shortRepoJSON{ID: r.ID, NodeID: nodeID("Repository", r.ID), Name: r.Name, FullName: r.FullName(), Private: r.Private}
}

func (e *Emulator) installationJSON(in *Installation) installationJSON {
	api := e.apiBase()
	acct := e.owner(in.Account)
	j := installationJSON{
		ID: in.ID, Account: e.simpleUser(acct), RepositorySelection: "selected",
		AccessTokensURL: fmt.Sprintf("%s/app/installations/%d/access_tokens", api, in.ID),
		RepositoriesURL: api + "/installation/repositories",
		HTMLURL:         fmt.Sprintf("%s/settings/installations/%d", e.webBase(), in.ID),
		AppID:           e.app.ID, AppSlug: e.app.Slug, TargetID: acct.ID, TargetType: acct.kind(),
		Permissions: appPermissions, Events: []string{"push"},
		CreatedAt: epoch, UpdatedAt: epoch,
	}
	if in.Suspended {
		t := epoch
		su := e.simpleUser(acct)
		j.SuspendedAt, j.SuspendedBy = &t, &su
	}
	return j
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
