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
