-- name: NodeRegister :one
-- A node agent registers on start, keyed by its internal address. A new node
-- gets @id and @ipv6_prefix (a unique violation on nodes_ipv6_prefix_unique
-- means: pick another /64); a known node keeps its id, its /64 and what is
-- allocated on it, and becomes active again unless it is draining: a drain
-- outlives the agent's restart (an upgrade restarts a drained node's agent).
INSERT INTO nodes (
    id, hostname, internal_address, api_address, region, labels,
    cpu_millis, memory_mb, free_cpu_millis, free_memory_mb,
    ipv6_prefix, agent_version
) VALUES (
    @id, @hostname, @internal_address, sqlc.narg(api_address), @region, @labels,
    @cpu_millis, @memory_mb, @cpu_millis, @memory_mb,
    @ipv6_prefix, @agent_version
)
ON CONFLICT (internal_address) DO UPDATE
SET hostname = excluded.hostname,
    api_address = excluded.api_address,
    region = excluded.region,
    labels = excluded.labels,
    cpu_millis = excluded.cpu_millis,
    memory_mb = excluded.memory_mb,
    free_cpu_millis = greatest(0, excluded.cpu_millis - (nodes.cpu_millis - nodes.free_cpu_millis)),
    free_memory_mb = greatest(0, excluded.memory_mb - (nodes.memory_mb - nodes.free_memory_mb)),
    agent_version = excluded.agent_version,
    status = CASE WHEN nodes.status = 'draining' THEN 'draining' ELSE 'active' END,
    last_heartbeat_at = now(),
    updated_at = now()
RETURNING *;

-- name: NodeGetByID :one
SELECT * FROM nodes WHERE id = @id;

-- name: NodeList :many
SELECT * FROM nodes ORDER BY hostname, id;

-- name: NodeListIPv6Prefixes :many
-- The /64s already taken, for choosing a new node's prefix.
SELECT ipv6_prefix FROM nodes ORDER BY ipv6_prefix;

-- name: NodeHeartbeat :one
-- Records that the node is alive and what it observes of its resources;
-- returns the row so the agent learns whether it is being drained. A node
-- declared dead that speaks again is back: active (its lost instances were
-- failed and replaced meanwhile; its agent stops them).
UPDATE nodes
SET last_heartbeat_at = now(),
    status = CASE WHEN status = 'dead' THEN 'active' ELSE status END,
    available_memory_mb = @available_memory_mb::int,
    load_millis = @load_millis::int,
    instances_running = @instances_running::int,
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: NodeListSchedulable :many
-- Active nodes heard from since @heartbeat_after, most free capacity first.
SELECT * FROM nodes
WHERE status = 'active' AND last_heartbeat_at > @heartbeat_after
ORDER BY free_cpu_millis DESC, free_memory_mb DESC, id;

-- name: NodeListStale :many
-- Live nodes not heard from since @heartbeat_before: candidates to declare dead.
SELECT * FROM nodes
WHERE status IN ('active', 'draining') AND last_heartbeat_at < @heartbeat_before
ORDER BY last_heartbeat_at;

-- name: NodeSetStatus :one
UPDATE nodes
SET status = @status, updated_at = now()
WHERE id = @id
RETURNING *;

-- name: NodeMarkDeadIfStale :one
-- Declares a node dead only if it is still silent; no row: it came back (or is
-- already dead).
UPDATE nodes
SET status = 'dead', updated_at = now()
WHERE id = @id AND status <> 'dead' AND last_heartbeat_at < @heartbeat_before
RETURNING *;

-- name: NodeAllocate :one
-- Reserves capacity for an instance; no row: not enough free capacity.
UPDATE nodes
SET free_cpu_millis = free_cpu_millis - @cpu_millis::int,
    free_memory_mb = free_memory_mb - @memory_mb::int,
    updated_at = now()
WHERE id = @id
  AND free_cpu_millis >= @cpu_millis::int
  AND free_memory_mb >= @memory_mb::int
RETURNING *;

-- name: NodeRelease :one
-- Gives back what NodeAllocate reserved, never above the node's total.
UPDATE nodes
SET free_cpu_millis = least(cpu_millis, free_cpu_millis + @cpu_millis::int),
    free_memory_mb = least(memory_mb, free_memory_mb + @memory_mb::int),
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: NodeListUpdatedSince :many
-- Rows changed after @since (every update of a node sets updated_at), for
-- the operator's in-memory view of the nodes: a refresh reads what changed
-- instead of the whole table.
SELECT * FROM nodes WHERE updated_at > @since;

-- name: NodeSetCredentialHash :exec
-- The agent's credential for the control plane, set at every start.
UPDATE nodes SET credential_hash = @credential_hash, updated_at = now()
WHERE id = @id;

-- name: NodeGetCredentialHash :one
SELECT credential_hash FROM nodes WHERE id = @id;

-- name: NodeListProjects :many
-- The projects with an instance on the node that is not stopped for good:
-- what the node's registry credential may pull.
SELECT DISTINCT deployments.project_id FROM instances
JOIN deployments ON deployments.id = instances.deployment_id
WHERE instances.node_id = @node_id AND instances.desired_state <> 'stopped'
ORDER BY deployments.project_id;
