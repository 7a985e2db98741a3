-- name: InstanceCreate :one
-- A unique violation on instances_ipv6_address_unique means: pick another address.
INSERT INTO instances (
    id, deployment_id, node_id, image_id,
    ipv6_address, port, cpu_millis, memory_mb
) VALUES (
    @id, @deployment_id, @node_id, @image_id,
    @ipv6_address, @port, @cpu_millis, @memory_mb
)
RETURNING *;

-- name: InstanceGetByID :one
SELECT * FROM instances WHERE id = @id;

-- name: InstanceListByNode :many
-- What a node agent has to converge: everything meant to run, and everything
-- meant to stop that has not stopped yet.
SELECT * FROM instances
WHERE node_id = @node_id
  AND (desired_state = 'running' OR state NOT IN ('stopped', 'failed'))
ORDER BY id;

-- name: InstanceListByDeployment :many
SELECT * FROM instances
WHERE deployment_id = @deployment_id
ORDER BY id;

-- name: InstanceSetState :one
-- Observed state, reported by the node agent.
UPDATE instances
SET state = @state::text,
    state_reason = sqlc.narg(state_reason),
    started_at = CASE WHEN @state::text = 'starting' THEN now() ELSE started_at END,
    first_started_at = CASE WHEN @state::text = 'starting' THEN coalesce(first_started_at, now()) ELSE first_started_at END,
    stopped_at = CASE WHEN @state::text IN ('stopped', 'failed') THEN now() ELSE stopped_at END,
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: InstanceNotifyState :exec
-- Wakes whoever waits on a deployment's instances (the operator's deploy
-- step, LISTEN zeitwork_instance_states; payload: the deployment id) after a
-- state was reported.
SELECT pg_notify('zeitwork_instance_states', sqlc.arg(deployment_id)::text);

-- name: InstanceIncrementRestartCount :one
UPDATE instances
SET restart_count = restart_count + 1, updated_at = now()
WHERE id = @id
RETURNING *;

-- name: InstanceSetDesiredState :one
UPDATE instances
SET desired_state = @desired_state, updated_at = now()
WHERE id = @id
RETURNING *;

-- name: InstanceStopByDeployment :many
-- Asks every instance of a deployment to stop; returns the ones changed so
-- their node agents can be woken.
UPDATE instances
SET desired_state = 'stopped', updated_at = now()
WHERE deployment_id = @deployment_id AND desired_state <> 'stopped'
RETURNING *;

-- name: InstanceListRoutable :many
-- The edge's backends: healthy instances that should run, of any
-- deployment (the active one serves the project's hosts, every one serves
-- its own preview host), with the node-proxy that reaches each.
SELECT
    deployments.project_id,
    instances.deployment_id,
    instances.id AS instance_id,
    nodes.internal_address AS node_internal_address
FROM instances
JOIN deployments ON deployments.id = instances.deployment_id
JOIN nodes ON nodes.id = instances.node_id
WHERE instances.desired_state = 'running'
  AND instances.state = 'healthy'
  AND nodes.status <> 'dead'
ORDER BY instances.deployment_id, instances.id;

-- name: InstanceListRoutableByProjects :many
-- The same, for the projects an edge was told changed.
SELECT
    deployments.project_id,
    instances.deployment_id,
    instances.id AS instance_id,
    nodes.internal_address AS node_internal_address
FROM instances
JOIN deployments ON deployments.id = instances.deployment_id
JOIN nodes ON nodes.id = instances.node_id
WHERE instances.desired_state = 'running'
  AND instances.state = 'healthy'
  AND nodes.status <> 'dead'
  AND deployments.project_id = ANY(@project_ids::uuid[])
ORDER BY instances.deployment_id, instances.id;

-- name: InstanceDelete :execrows
-- Only rows that are stopped for good can go.
DELETE FROM instances
WHERE id = @id AND desired_state = 'stopped' AND state IN ('stopped', 'failed');

-- name: InstanceListForAgent :many
-- What a node agent converges, with what it needs to run each instance: the
-- image to pull and the project whose variables and health check apply.
SELECT sqlc.embed(instances),
       images.repository AS image_repository,
       images.digest AS image_digest,
       deployments.project_id,
       projects.health_check_path
FROM instances
JOIN images ON images.id = instances.image_id
JOIN deployments ON deployments.id = instances.deployment_id
JOIN projects ON projects.id = deployments.project_id
WHERE instances.node_id = @node_id
  AND (instances.desired_state = 'running' OR instances.state NOT IN ('stopped', 'failed'))
ORDER BY instances.id;

-- name: InstanceResetRestartCount :one
-- Healthy again after crashing: the next crash starts the backoff afresh.
UPDATE instances
SET restart_count = 0, updated_at = now()
WHERE id = @id
RETURNING *;

-- name: InstanceGetForUpdate :one
SELECT * FROM instances WHERE id = @id FOR UPDATE;

-- name: InstanceListLiveByDeployment :many
-- A deployment's instances that count towards its replicas: meant to run
-- and not given up on.
SELECT * FROM instances
WHERE deployment_id = @deployment_id AND desired_state = 'running' AND state <> 'failed'
ORDER BY id;

-- name: InstanceFailOnNode :many
-- A node was declared dead: its instances are lost. They will not come back
-- by themselves (the node may never return), so they are failed and asked to
-- stop (a node that does return cleans them up).
UPDATE instances
SET desired_state = 'stopped', state = 'failed', state_reason = @reason::text, stopped_at = now(), updated_at = now()
WHERE node_id = @node_id AND state NOT IN ('stopped', 'failed')
RETURNING *;

-- name: InstanceStopFailed :many
-- Failed instances still meant to run: they will be replaced, so they stop.
UPDATE instances
SET desired_state = 'stopped', updated_at = now()
WHERE desired_state = 'running' AND state = 'failed'
RETURNING *;

-- name: InstanceList :many
-- Instances, optionally of one deployment and/or on one node, newest first.
SELECT * FROM instances
WHERE (sqlc.narg(deployment_id)::uuid IS NULL OR deployment_id = sqlc.narg(deployment_id)::uuid)
  AND (sqlc.narg(node_id)::uuid IS NULL OR node_id = sqlc.narg(node_id)::uuid)
ORDER BY id DESC
LIMIT @max_rows;

-- name: InstanceReleaseCapacity :many
-- Instances stopped for good whose reservation is still held: marks them
-- released and returns them, so the caller gives the capacity back to
-- their nodes in the same transaction.
UPDATE instances
SET capacity_released_at = now(), updated_at = now()
WHERE desired_state = 'stopped' AND state IN ('stopped', 'failed') AND capacity_released_at IS NULL
RETURNING *;
