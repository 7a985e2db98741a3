-- name: EnvironmentVariableUpsert :one
-- Sets a variable; @id is used only when the name is new to the project.
-- A NULL @environments keeps an existing variable's environments and gives
-- a new one the column's default, both.
INSERT INTO environment_variables (id, project_id, name, value_ciphertext, key_id, environments)
VALUES (@id, @project_id, @name, @value_ciphertext, @key_id,
        coalesce(sqlc.narg(environments)::text[], '{production,preview}'))
ON CONFLICT (project_id, name) DO UPDATE
SET value_ciphertext = excluded.value_ciphertext,
    key_id = excluded.key_id,
    environments = coalesce(sqlc.narg(environments)::text[], environment_variables.environments),
    updated_at = now()
RETURNING *;

-- name: EnvironmentVariableListByProject :many
SELECT * FROM environment_variables
WHERE project_id = @project_id
ORDER BY name;

-- name: EnvironmentVariableDelete :execrows
DELETE FROM environment_variables
WHERE project_id = @project_id AND name = @name;

-- name: EnvironmentVariableListNotKey :many
-- Key rotation: the variables still encrypted with another key than
-- @key_id, after @after in id order (a batch at a time).
SELECT * FROM environment_variables
WHERE key_id <> @key_id AND id > @after
ORDER BY id
LIMIT @max_rows;

-- name: EnvironmentVariableReencrypt :execrows
-- Key rotation: replaces the ciphertext only if it is still under @old_key_id.
UPDATE environment_variables
SET value_ciphertext = @value_ciphertext, key_id = @key_id, updated_at = now()
WHERE id = @id AND key_id = @old_key_id;

-- name: EnvironmentVariablePage :many
-- A page of a project's variables, oldest first, for listing.
SELECT * FROM environment_variables
WHERE project_id = @project_id AND id > @after
ORDER BY id
LIMIT @max_rows;

-- name: EnvironmentVariableGet :one
SELECT * FROM environment_variables
WHERE project_id = @project_id AND name = @name;

-- name: EnvironmentVariableListForDeployment :many
-- The variables an instance of @deployment_id gets: those of its project
-- whose environments include the deployment's, so that a preview never
-- sees a production-only secret.
SELECT environment_variables.* FROM environment_variables
JOIN deployments ON deployments.project_id = environment_variables.project_id
WHERE deployments.id = @deployment_id
  AND deployments.environment = ANY(environment_variables.environments)
ORDER BY environment_variables.name;

-- name: EnvironmentVariableKeyIDs :many
-- The secrets keys the stored values are encrypted under: a cluster being
-- bootstrapped or recovered must hold every one of them.
SELECT DISTINCT key_id FROM environment_variables ORDER BY key_id;
