-- name: OrganisationCreate :one
INSERT INTO organisations (id, slug, name)
VALUES (@id, @slug, @name)
RETURNING *;

-- name: OrganisationGetByID :one
SELECT * FROM organisations WHERE id = @id;

-- name: OrganisationGetBySlug :one
SELECT * FROM organisations WHERE slug = @slug;

-- name: OrganisationListByUser :many
SELECT organisations.*
FROM organisations
JOIN organisation_members ON organisation_members.organisation_id = organisations.id
WHERE organisation_members.user_id = @user_id
ORDER BY organisations.slug;

-- name: OrganisationSetName :one
UPDATE organisations
SET name = @name, updated_at = now()
WHERE id = @id
RETURNING *;

-- name: OrganisationDelete :execrows
-- Fails with a foreign key violation while the organisation still has projects.
DELETE FROM organisations WHERE id = @id;
