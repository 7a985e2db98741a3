-- name: ProjectCreate :one
INSERT INTO projects (
    id, organisation_id, slug, name,
    github_installation_id, github_repository_id, github_repository_full_name,
    branch, root_directory, dockerfile_path,
    port, replicas, cpu_millis, memory_mb, health_check_path
) VALUES (
    @id, @organisation_id, @slug, @name,
    sqlc.narg(github_installation_id), sqlc.narg(github_repository_id), sqlc.narg(github_repository_full_name),
    @branch, @root_directory, sqlc.narg(dockerfile_path),
    @port, @replicas, @cpu_millis, @memory_mb, @health_check_path
)
RETURNING *;

-- name: ProjectGetByID :one
SELECT * FROM projects WHERE id = @id;

-- name: ProjectGetBySlug :one
SELECT * FROM projects WHERE slug = @slug;

-- name: ProjectGetForMember :one
-- The project @id when @user_id is a member of its organisation.
SELECT projects.*
FROM projects
JOIN organisation_members ON organisation_members.organisation_id = projects.organisation_id
WHERE projects.id = @id AND organisation_members.user_id = @user_id;

-- name: ProjectListForMember :many
-- A page of the projects of every organisation @user_id belongs to, oldest
-- first, after the id @after.
SELECT projects.*
FROM projects
JOIN organisation_members ON organisation_members.organisation_id = projects.organisation_id
WHERE organisation_members.user_id = @user_id AND projects.id > @after
ORDER BY projects.id
LIMIT @max;

-- name: ProjectListByOrganisation :many
SELECT * FROM projects
WHERE organisation_id = @organisation_id
ORDER BY slug;

-- name: ProjectListByGithubRepository :many
-- The projects a push to @branch of a repository deploys.
SELECT projects.*
FROM projects
JOIN github_installations ON github_installations.id = projects.github_installation_id
WHERE projects.github_repository_id = @github_repository_id::bigint
  AND projects.branch = @branch
  AND github_installations.suspended_at IS NULL
ORDER BY projects.id;

-- name: ProjectUpdateSettings :one
UPDATE projects
SET name = @name,
    branch = @branch,
    root_directory = @root_directory,
    dockerfile_path = sqlc.narg(dockerfile_path),
    port = @port,
    replicas = @replicas,
    cpu_millis = @cpu_millis,
    memory_mb = @memory_mb,
    health_check_path = @health_check_path,
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: ProjectSetRepository :one
-- Null arguments disconnect the repository.
UPDATE projects
SET github_installation_id = sqlc.narg(github_installation_id),
    github_repository_id = sqlc.narg(github_repository_id),
    github_repository_full_name = sqlc.narg(github_repository_full_name),
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: ProjectSetActiveDeployment :one
-- The deployment must belong to the project (projects_active_deployment_fk).
UPDATE projects
SET active_deployment_id = sqlc.narg(active_deployment_id), updated_at = now()
WHERE id = @id
RETURNING *;

-- name: ProjectDelete :execrows
-- Removes deployments, builds, images, domains and variables with it; fails
-- while instance rows of its deployments remain.
DELETE FROM projects WHERE id = @id;

-- name: ProjectGetForUpdate :one
-- Serialises activations of one project's deployments.
SELECT * FROM projects WHERE id = @id FOR UPDATE;

-- name: ProjectListRouted :many
-- The edge's hosts: every project with an active deployment, whether or not
-- any instance of it is healthy right now (then the edge answers 503, not 404).
SELECT id, slug, active_deployment_id::uuid AS active_deployment_id
FROM projects
WHERE active_deployment_id IS NOT NULL
ORDER BY id;

-- name: ProjectListRoutedByIDs :many
-- The same, for the projects an edge was told changed.
SELECT id, slug, active_deployment_id::uuid AS active_deployment_id
FROM projects
WHERE active_deployment_id IS NOT NULL AND id = ANY(@ids::uuid[])
ORDER BY id;

-- name: ProjectUpdate :one
-- Every setting a member may change, the slug (and so the host) included.
-- A unique violation on projects_slug_unique means the slug is taken.
UPDATE projects
SET slug = @slug,
    name = @name,
    branch = @branch,
    root_directory = @root_directory,
    dockerfile_path = sqlc.narg(dockerfile_path),
    port = @port,
    replicas = @replicas,
    cpu_millis = @cpu_millis,
    memory_mb = @memory_mb,
    health_check_path = @health_check_path,
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: ProjectLockBuilds :many
-- Locks every build of a project being deleted, first: a builder finishing
-- one holds its row while it writes the image and the deployment, so the
-- delete waits for it, and a builder that comes after finds no row.
SELECT builds.id
FROM builds
JOIN deployments ON deployments.id = builds.deployment_id
WHERE deployments.project_id = @project_id
ORDER BY builds.id
FOR UPDATE OF builds;

-- name: ProjectLockDeployments :many
-- Locks a project's deployments, so that no instance of them is created
-- (its foreign key waits on the lock) while they are deleted.
SELECT id FROM deployments
WHERE project_id = @project_id
ORDER BY id
FOR UPDATE;

-- name: ProjectDeleteInstances :many
-- Removes every instance of a project's deployments, whatever its state;
-- the caller gives back the capacity still reserved (capacity_released_at
-- null) and wakes the nodes, whose agents stop containers without a row.
DELETE FROM instances
USING deployments
WHERE deployments.id = instances.deployment_id AND deployments.project_id = @project_id
RETURNING instances.*;

-- name: ProjectNotifyNodes :exec
-- Wakes the agents of @node_ids, as the instances triggers do for inserts
-- and updates (deletes fire none), when the transaction commits.
SELECT pg_notify('zeitwork_instances', node_id::text)
FROM unnest(@node_ids::uuid[]) AS node_id;

-- name: ProjectConnectRepository :one
-- Connects a repository and says which of its branches and directories
-- production builds from.
UPDATE projects
SET github_installation_id = @github_installation_id,
    github_repository_id = @github_repository_id,
    github_repository_full_name = @github_repository_full_name,
    branch = @branch,
    root_directory = @root_directory,
    updated_at = now()
WHERE id = @id
RETURNING *;
