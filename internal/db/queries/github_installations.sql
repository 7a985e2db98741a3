-- name: GithubInstallationUpsert :one
-- Records an installation for @organisation_id, or refreshes the account of an
-- installation already known (which keeps its organisation and id).
INSERT INTO github_installations (id, github_installation_id, organisation_id, account_login, account_type)
VALUES (@id, @github_installation_id, @organisation_id, @account_login, @account_type)
ON CONFLICT (github_installation_id) DO UPDATE
SET account_login = excluded.account_login,
    account_type = excluded.account_type,
    updated_at = now()
RETURNING *;

-- name: GithubInstallationGetByID :one
SELECT * FROM github_installations WHERE id = @id;

-- name: GithubInstallationGetByGithubID :one
SELECT * FROM github_installations WHERE github_installation_id = @github_installation_id;

-- name: GithubInstallationListByOrganisation :many
SELECT * FROM github_installations
WHERE organisation_id = @organisation_id
ORDER BY account_login, id;

-- name: GithubInstallationSetSuspended :one
-- A null @suspended_at unsuspends.
UPDATE github_installations
SET suspended_at = sqlc.narg(suspended_at), updated_at = now()
WHERE github_installation_id = @github_installation_id
RETURNING *;

-- name: GithubInstallationDeleteByGithubID :execrows
-- Projects using the installation keep their repository but lose the link.
DELETE FROM github_installations WHERE github_installation_id = @github_installation_id;

-- name: GithubInstallationListProjectsByRepository :many
-- The projects a push to a repository may deploy: connected to it through
-- this very installation, which must not be suspended. Matching by the
-- repository's id, not its name, survives renames.
SELECT projects.*
FROM projects
JOIN github_installations ON github_installations.id = projects.github_installation_id
WHERE github_installations.github_installation_id = @github_installation_id
  AND github_installations.suspended_at IS NULL
  AND projects.github_repository_id = @github_repository_id::bigint
ORDER BY projects.id;

-- name: GithubInstallationDetachRepositories :execrows
-- The installation lost access to these repositories: their projects keep
-- the repository but lose the link, so pushes no longer deploy them.
UPDATE projects
SET github_installation_id = NULL, updated_at = now()
WHERE projects.github_installation_id = (
    SELECT gi.id FROM github_installations AS gi WHERE gi.github_installation_id = @github_installation_id
  )
  AND github_repository_id = ANY(@github_repository_ids::bigint[]);

-- name: GithubInstallationGetForMember :one
-- The installation GitHub numbers @github_installation_id when @user_id is a
-- member of the organisation it is linked to.
SELECT github_installations.*
FROM github_installations
JOIN organisation_members ON organisation_members.organisation_id = github_installations.organisation_id
WHERE github_installations.github_installation_id = @github_installation_id
  AND organisation_members.user_id = @user_id;

-- name: GithubInstallationListForMember :many
-- A page of the installations of every organisation @user_id belongs to,
-- oldest first, after the id @after.
SELECT github_installations.*
FROM github_installations
JOIN organisation_members ON organisation_members.organisation_id = github_installations.organisation_id
WHERE organisation_members.user_id = @user_id AND github_installations.id > @after
ORDER BY github_installations.id
LIMIT @max;
