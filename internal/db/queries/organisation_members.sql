-- name: OrganisationMemberCreate :one
INSERT INTO organisation_members (id, organisation_id, user_id, role)
VALUES (@id, @organisation_id, @user_id, @role)
RETURNING *;

-- name: OrganisationMemberGet :one
-- The membership that authorises @user_id in @organisation_id.
SELECT * FROM organisation_members
WHERE organisation_id = @organisation_id AND user_id = @user_id;

-- name: OrganisationMemberListByOrganisation :many
SELECT sqlc.embed(organisation_members), sqlc.embed(users)
FROM organisation_members
JOIN users ON users.id = organisation_members.user_id
WHERE organisation_members.organisation_id = @organisation_id
ORDER BY organisation_members.created_at, organisation_members.id;

-- name: OrganisationMemberSetRole :one
UPDATE organisation_members
SET role = @role, updated_at = now()
WHERE organisation_id = @organisation_id AND user_id = @user_id
RETURNING *;

-- name: OrganisationMemberDelete :execrows
DELETE FROM organisation_members
WHERE organisation_id = @organisation_id AND user_id = @user_id;
