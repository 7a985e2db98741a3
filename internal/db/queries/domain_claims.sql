-- name: DomainClaimRecord :exec
-- Remembers that @project_id had @name verified; kept after the domain or
-- the project is removed.
INSERT INTO domain_claims (name, project_id)
VALUES (lower(@name::text), @project_id)
ON CONFLICT (name, project_id) DO UPDATE SET last_verified_at = now();

-- name: DomainClaimGetOther :one
-- A name equal to or below @registrable (a registrable domain such as
-- example.co.uk) that a project other than @project_id ever had verified:
-- @name itself first, if it is one.
SELECT name FROM domain_claims
WHERE project_id <> @project_id
  AND (name = lower(@registrable::text) OR right(name, length(@registrable::text) + 1) = '.' || lower(@registrable::text))
ORDER BY name = lower(@name::text) DESC, name
LIMIT 1;
