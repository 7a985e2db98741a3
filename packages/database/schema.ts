// The Zeitwork data model. This file is the source of truth for the schema:
// `npm run generate` turns changes into SQL migrations under ./migrations,
// which both drizzle-kit and `zeitwork migrate` apply, and which sqlc reads to
// type the Go queries in internal/db.
//
// Conventions:
//   - Every `id` is a UUIDv7 generated in Go; the database never makes one up.
//   - Timestamps are timestamptz. `updated_at` is set by the queries, not by a trigger.
//   - Status-like columns are text with a CHECK listing the allowed values, so a
//     new value is one migration and no enum juggling.
//   - Every foreign key says what happens on delete. "no action" (checked at the end
//     of the statement) guards rows that must be cleaned up first, while still letting
//     a cascade from a common parent remove both sides in one statement.

import { sql } from "drizzle-orm";
import {
  bigint,
  boolean,
  check,
  cidr,
  customType,
  foreignKey,
  index,
  inet,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uniqueIndex,
  uuid,
  type AnyPgColumn,
  type PgTableExtraConfigValue,
} from "drizzle-orm/pg-core";

const bytea = customType<{ data: Uint8Array; driverData: Uint8Array }>({
  dataType() {
    return "bytea";
  },
});

const timestamptz = (name: string) => timestamp(name, { withTimezone: true });
const createdAt = () => timestamptz("created_at").notNull().defaultNow();
const updatedAt = () => timestamptz("updated_at").notNull().defaultNow();

// Organisation and project slugs: lower-case, DNS-label safe (a project slug is
// the first label of `<slug>.<apps-domain>`).
const slugPattern = "^[a-z0-9][a-z0-9-]{0,62}$";

// A lower-case host name without trailing dot or port.
const hostnamePattern =
  "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?[.])+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

// Users who signed in with GitHub. GitHub's numeric user id is the identity;
// the login (username) can change and is refreshed on every sign-in.
export const users = pgTable("users", {
  id: uuid("id").primaryKey(),
  githubUserId: bigint("github_user_id", { mode: "number" }).notNull().unique(),
  username: text("username").notNull(),
  name: text("name"),
  email: text("email"),
  avatarUrl: text("avatar_url"),
  // Admins run the installation (admit waitlisted users, …); the first user
  // of a fresh install becomes one.
  admin: boolean("admin").notNull().default(false),
  // Admitted users may use the platform; the others wait until an admin
  // admits them (the first user is admitted as its admin).
  admitted: boolean("admitted").notNull().default(false),
  createdAt: createdAt(),
  updatedAt: updatedAt(),
});

// Browser sessions. The token lives only in the user's cookie; the database
// keeps its SHA-256, so a leaked backup signs nobody in.
export const sessions = pgTable(
  "sessions",
  {
    id: uuid("id").primaryKey(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    tokenHash: bytea("token_hash").notNull().unique(),
    expiresAt: timestamptz("expires_at").notNull(),
    revokedAt: timestamptz("revoked_at"),
    // What the account page shows to tell one's browsers apart: the
    // User-Agent that signed in, and the last use (written at most once a
    // minute).
    userAgent: text("user_agent"),
    lastSeenAt: timestamptz("last_seen_at"),
    createdAt: createdAt(),
  },
  (t) => [
    index("sessions_user_id_idx").on(t.userId),
    check("sessions_token_hash_check", sql`length(${t.tokenHash}) = 32`),
  ],
);

// API tokens for the CLI and automation (`Authorization: Bearer zw_…`).
// Shown once at creation; only the SHA-256 is kept.
export const apiTokens = pgTable(
  "api_tokens",
  {
    id: uuid("id").primaryKey(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    tokenHash: bytea("token_hash").notNull().unique(),
    lastUsedAt: timestamptz("last_used_at"),
    revokedAt: timestamptz("revoked_at"),
    createdAt: createdAt(),
  },
  (t) => [
    index("api_tokens_user_id_idx").on(t.userId),
    check("api_tokens_token_hash_check", sql`length(${t.tokenHash}) = 32`),
    check("api_tokens_name_check", sql`length(${t.name}) between 1 and 100`),
  ],
);

// Device-style sign-in for the CLI (RFC 8628's shape): the CLI holds the
// device code and polls; the user approves the short user code in a signed-in
// browser; the poll then receives a new API token, once. Only hashes of the
// device code are kept, like every other credential.
export const deviceAuthorizations = pgTable(
  "device_authorizations",
  {
    id: uuid("id").primaryKey(),
    deviceCodeHash: bytea("device_code_hash").notNull().unique(),
    // Short, typed by a human (e.g. "WDJB-MJHT"); unique while pending.
    userCode: text("user_code").notNull(),
    // What the CLI calls itself, shown on the approval page and used as the token's name.
    clientName: text("client_name").notNull(),
    userId: uuid("user_id").references(() => users.id, { onDelete: "cascade" }),
    approvedAt: timestamptz("approved_at"),
    deniedAt: timestamptz("denied_at"),
    // Set when the poll picked up its token: a device code yields one token.
    tokenId: uuid("token_id").references(() => apiTokens.id, { onDelete: "set null" }),
    consumedAt: timestamptz("consumed_at"),
    lastPolledAt: timestamptz("last_polled_at"),
    expiresAt: timestamptz("expires_at").notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex("device_authorizations_user_code_pending_idx")
      .on(t.userCode)
      .where(sql`${t.consumedAt} is null and ${t.deniedAt} is null`),
    index("device_authorizations_expires_at_idx").on(t.expiresAt),
    check("device_authorizations_device_code_hash_check", sql`length(${t.deviceCodeHash}) = 32`),
    check("device_authorizations_user_code_check", sql`${t.userCode} ~ '^[A-Z0-9]{4}-[A-Z0-9]{4}$'`),
    check("device_authorizations_client_name_check", sql`length(${t.clientName}) between 1 and 100`),
    check(
      "device_authorizations_approved_check",
      sql`${t.approvedAt} is null or ${t.userId} is not null`,
    ),
    check(
      "device_authorizations_decided_once_check",
      sql`${t.approvedAt} is null or ${t.deniedAt} is null`,
    ),
  ],
);

// Organisations own projects and GitHub installations; users reach them
// through organisation_members.
export const organisations = pgTable(
  "organisations",
  {
    id: uuid("id").primaryKey(),
    slug: text("slug").notNull().unique(),
    name: text("name").notNull(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [check("organisations_slug_check", sql`${t.slug} ~ ${sql.raw(`'${slugPattern}'`)}`)],
);

// Membership of a user in an organisation, with their role there.
export const organisationMembers = pgTable(
  "organisation_members",
  {
    id: uuid("id").primaryKey(),
    organisationId: uuid("organisation_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "cascade" }),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    role: text("role").notNull().default("member"),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    unique("organisation_members_organisation_id_user_id_unique").on(t.organisationId, t.userId),
    index("organisation_members_user_id_idx").on(t.userId),
    check("organisation_members_role_check", sql`${t.role} in ('owner', 'admin', 'member')`),
  ],
);

// People who asked to be let in. Emails are stored lower-case so that the
// unique constraint is case-insensitive.
export const waitlist = pgTable(
  "waitlist",
  {
    id: uuid("id").primaryKey(),
    email: text("email").notNull().unique(),
    source: text("source"),
    createdAt: createdAt(),
  },
  (t) => [
    check("waitlist_email_lower_check", sql`${t.email} = lower(${t.email})`),
    check("waitlist_email_format_check", sql`${t.email} ~ '^[^@[:space:]]+@[^@[:space:]]+$'`),
  ],
);

// Installations of the Zeitwork GitHub App, linked to the organisation that
// installed it. Tokens are minted on demand and never stored.
export const githubInstallations = pgTable(
  "github_installations",
  {
    id: uuid("id").primaryKey(),
    githubInstallationId: bigint("github_installation_id", { mode: "number" }).notNull().unique(),
    organisationId: uuid("organisation_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "cascade" }),
    accountLogin: text("account_login").notNull(),
    accountType: text("account_type").notNull(),
    suspendedAt: timestamptz("suspended_at"),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    index("github_installations_organisation_id_idx").on(t.organisationId),
    check("github_installations_account_type_check", sql`${t.accountType} in ('User', 'Organization')`),
  ],
);

// An app: where its source comes from, how it is built and how it runs.
// The slug is globally unique because it is the host `<slug>.<apps-domain>`.
// active_deployment_id is the deployment the edge routes to.
export const projects = pgTable(
  "projects",
  {
    id: uuid("id").primaryKey(),
    organisationId: uuid("organisation_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "restrict" }),
    slug: text("slug").notNull().unique(),
    name: text("name").notNull(),
    githubInstallationId: uuid("github_installation_id").references(() => githubInstallations.id, {
      onDelete: "set null",
    }),
    githubRepositoryId: bigint("github_repository_id", { mode: "number" }),
    githubRepositoryFullName: text("github_repository_full_name"),
    branch: text("branch").notNull().default("main"),
    // Relative to the repository root; '' is the root itself.
    rootDirectory: text("root_directory").notNull().default(""),
    // Relative to root_directory. Null: use root_directory/Dockerfile if it
    // exists, otherwise generate one from framework detection.
    dockerfilePath: text("dockerfile_path"),
    port: integer("port").notNull().default(8080),
    replicas: integer("replicas").notNull().default(3),
    cpuMillis: integer("cpu_millis").notNull().default(1000),
    memoryMb: integer("memory_mb").notNull().default(512),
    healthCheckPath: text("health_check_path").notNull().default("/"),
    activeDeploymentId: uuid("active_deployment_id"),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t): PgTableExtraConfigValue[] => [
    // Composite so that a project can only point at one of its own deployments.
    foreignKey({
      name: "projects_active_deployment_fk",
      columns: [t.activeDeploymentId, t.id],
      foreignColumns: [deployments.id, deployments.projectId],
    }).onDelete("no action"),
    index("projects_organisation_id_idx").on(t.organisationId),
    index("projects_github_installation_id_idx").on(t.githubInstallationId),
    // Push webhooks find their projects by repository id.
    index("projects_github_repository_id_idx").on(t.githubRepositoryId),
    check("projects_slug_check", sql`${t.slug} ~ ${sql.raw(`'${slugPattern}'`)}`),
    // `<deployment-id>.<apps-domain>` serves one deployment: a slug shaped
    // like a UUID would take that host.
    check(
      "projects_slug_not_uuid_check",
      sql`${t.slug} !~ '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'`,
    ),
    check(
      "projects_github_repository_check",
      sql`(${t.githubRepositoryId} is null) = (${t.githubRepositoryFullName} is null)`,
    ),
    check("projects_branch_check", sql`${t.branch} <> ''`),
    check(
      "projects_root_directory_check",
      sql`${t.rootDirectory} !~ '(^/|(^|/)[.][.](/|$))'`,
    ),
    check(
      "projects_dockerfile_path_check",
      sql`${t.dockerfilePath} <> '' and ${t.dockerfilePath} !~ '(^/|(^|/)[.][.](/|$))'`,
    ),
    check("projects_port_check", sql`${t.port} between 1 and 65535`),
    check("projects_replicas_check", sql`${t.replicas} >= 3`),
    check("projects_cpu_millis_check", sql`${t.cpuMillis} > 0`),
    check("projects_memory_mb_check", sql`${t.memoryMb} > 0`),
    check("projects_health_check_path_check", sql`${t.healthCheckPath} like '/%'`),
  ],
);

// A project's environment variables. Values are encrypted by the api before
// they reach the database; key_id names the key so keys can be rotated.
export const environmentVariables = pgTable(
  "environment_variables",
  {
    id: uuid("id").primaryKey(),
    projectId: uuid("project_id")
      .notNull()
      .references(() => projects.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    valueCiphertext: bytea("value_ciphertext").notNull(),
    keyId: text("key_id").notNull(),
    // The deployment environments that get the variable: a preview runs
    // code from any branch, so production secrets can be kept from it.
    environments: text("environments")
      .array()
      .notNull()
      .default(sql`'{production,preview}'`),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    unique("environment_variables_project_id_name_unique").on(t.projectId, t.name),
    check("environment_variables_name_check", sql`${t.name} ~ '^[A-Za-z_][A-Za-z0-9_]*$'`),
    check(
      "environment_variables_environments_check",
      sql`cardinality(${t.environments}) >= 1 and ${t.environments} <@ array['production', 'preview']::text[]`,
    ),
  ],
);

// One attempt to ship a project at one source revision, from queued through
// active to stopped (or failed). At most one deployment per project is active.
export const deployments = pgTable(
  "deployments",
  {
    id: uuid("id").primaryKey(),
    projectId: uuid("project_id")
      .notNull()
      .references((): AnyPgColumn => projects.id, { onDelete: "cascade" }),
    status: text("status").notNull().default("queued"),
    failureReason: text("failure_reason"),
    sourceType: text("source_type").notNull(),
    githubCommitSha: text("github_commit_sha"),
    githubRef: text("github_ref"),
    commitMessage: text("commit_message"),
    // S3 key of the archive a CLI uploaded (source_type = 'upload').
    sourceArchiveKey: text("source_archive_key"),
    // Keeps the image while a deployment uses it; a project delete removes both.
    imageId: uuid("image_id").references((): AnyPgColumn => images.id, { onDelete: "no action" }),
    replicas: integer("replicas").notNull().default(3),
    // 'production' deployments take the project's hosts when active;
    // 'preview' ones (pushes to other branches) answer only at
    // <deployment-id>.<apps-domain>, and several may be active at once.
    environment: text("environment").notNull().default("production"),
    createdByUserId: uuid("created_by_user_id").references(() => users.id, { onDelete: "set null" }),
    // The GitHub login that pushed the commit; a GitHub login is not a
    // Zeitwork user, so it is kept as text.
    pushedBy: text("pushed_by"),
    buildingAt: timestamptz("building_at"),
    deployingAt: timestamptz("deploying_at"),
    activeAt: timestamptz("active_at"),
    retiringAt: timestamptz("retiring_at"),
    // When a retiring deployment is to be stopped (the grace period's end).
    stopAt: timestamptz("stop_at"),
    stoppedAt: timestamptz("stopped_at"),
    failedAt: timestamptz("failed_at"),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    // Target of projects_active_deployment_fk.
    unique("deployments_id_project_id_unique").on(t.id, t.projectId),
    index("deployments_project_id_created_at_idx").on(t.projectId, t.createdAt.desc()),
    // A project's deployments, newest first, a page at a time (the API's list).
    index("deployments_project_id_id_idx").on(t.projectId, t.id.desc()),
    index("deployments_status_idx").on(t.status),
    index("deployments_stop_at_idx").on(t.stopAt).where(sql`${t.status} = 'retiring'`),
    // Switching traffic must retire the old deployment before activating the new one.
    uniqueIndex("deployments_project_id_active_idx")
      .on(t.projectId)
      .where(sql`${t.status} = 'active' and ${t.environment} = 'production'`),
    // Previews of one branch: a new push retires the older ones, a deleted
    // branch stops them all.
    index("deployments_project_id_github_ref_idx")
      .on(t.projectId, t.githubRef)
      .where(sql`${t.environment} = 'preview'`),
    check("deployments_environment_check", sql`${t.environment} in ('production', 'preview')`),
    check(
      "deployments_status_check",
      sql`${t.status} in ('queued', 'building', 'deploying', 'active', 'retiring', 'stopped', 'failed')`,
    ),
    check(
      "deployments_failure_reason_check",
      sql`${t.status} <> 'failed' or ${t.failureReason} is not null`,
    ),
    check("deployments_source_type_check", sql`${t.sourceType} in ('github', 'upload')`),
    check(
      "deployments_source_check",
      sql`(${t.sourceType} = 'github' and ${t.githubCommitSha} is not null) or (${t.sourceType} = 'upload' and ${t.sourceArchiveKey} is not null)`,
    ),
    check("deployments_replicas_check", sql`${t.replicas} >= 3`),
    check("deployments_stop_at_check", sql`${t.status} <> 'retiring' or ${t.stopAt} is not null`),
  ],
);

// One build of a deployment's image. A deployment may be built more than once
// (attempt), e.g. after a builder died; deadline_at lets others reclaim it.
export const builds = pgTable(
  "builds",
  {
    id: uuid("id").primaryKey(),
    deploymentId: uuid("deployment_id")
      .notNull()
      .references(() => deployments.id, { onDelete: "cascade" }),
    status: text("status").notNull().default("queued"),
    attempt: integer("attempt").notNull().default(1),
    builderId: text("builder_id"),
    // What the detector decided: 'dockerfile', 'nextjs', 'nuxt', 'rails', 'laravel', ...
    detectedKind: text("detected_kind"),
    deadlineAt: timestamptz("deadline_at"),
    startedAt: timestamptz("started_at"),
    finishedAt: timestamptz("finished_at"),
    failureReason: text("failure_reason"),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    // Also serves lookups by deployment_id.
    unique("builds_deployment_id_attempt_unique").on(t.deploymentId, t.attempt),
    index("builds_deadline_at_idx").on(t.deadlineAt).where(sql`${t.status} = 'running'`),
    check(
      "builds_status_check",
      sql`${t.status} in ('queued', 'running', 'succeeded', 'failed', 'cancelled')`,
    ),
    check("builds_attempt_check", sql`${t.attempt} >= 1`),
    check("builds_failure_reason_check", sql`${t.status} <> 'failed' or ${t.failureReason} is not null`),
  ],
);

// Build output, one row per line. The UUIDv7 id orders the lines, so
// (build_id, id) serves both replay and "everything after the last id I saw".
export const buildLogs = pgTable(
  "build_logs",
  {
    id: uuid("id").primaryKey(),
    buildId: uuid("build_id")
      .notNull()
      .references(() => builds.id, { onDelete: "cascade" }),
    stream: text("stream").notNull(),
    line: text("line").notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    index("build_logs_build_id_id_idx").on(t.buildId, t.id),
    check("build_logs_stream_check", sql`${t.stream} in ('stdout', 'stderr', 'system')`),
  ],
);

// Container images pushed to the registry, addressed by digest.
export const images = pgTable(
  "images",
  {
    id: uuid("id").primaryKey(),
    projectId: uuid("project_id")
      .notNull()
      .references(() => projects.id, { onDelete: "cascade" }),
    buildId: uuid("build_id").references(() => builds.id, { onDelete: "set null" }),
    repository: text("repository").notNull(),
    tag: text("tag").notNull(),
    digest: text("digest").notNull(),
    sizeBytes: bigint("size_bytes", { mode: "number" }),
    createdAt: createdAt(),
  },
  (t) => [
    unique("images_repository_tag_unique").on(t.repository, t.tag),
    index("images_project_id_idx").on(t.projectId),
    index("images_build_id_idx").on(t.buildId),
    check("images_digest_check", sql`${t.digest} ~ '^sha256:[a-f0-9]{64}$'`),
    check("images_size_bytes_check", sql`${t.sizeBytes} >= 0`),
  ],
);

// Worker machines running a node agent. A node registers itself (keyed by its
// internal address), heartbeats, and owns a /64 its instances take addresses from.
export const nodes = pgTable(
  "nodes",
  {
    id: uuid("id").primaryKey(),
    hostname: text("hostname").notNull(),
    internalAddress: text("internal_address").notNull().unique(),
    // host:port of the node API on the private network, as the agent
    // advertised it at registration (the api reads instances' logs there).
    apiAddress: text("api_address"),
    region: text("region").notNull().default(""),
    labels: jsonb("labels").notNull().default({}),
    cpuMillis: integer("cpu_millis").notNull(),
    memoryMb: integer("memory_mb").notNull(),
    freeCpuMillis: integer("free_cpu_millis").notNull(),
    freeMemoryMb: integer("free_memory_mb").notNull(),
    ipv6Prefix: cidr("ipv6_prefix").notNull().unique(),
    status: text("status").notNull().default("active"),
    agentVersion: text("agent_version").notNull().default(""),
    lastHeartbeatAt: timestamptz("last_heartbeat_at").notNull().defaultNow(),
    // What the agent observed at its last heartbeat, as opposed to the
    // scheduler's reservations above: memory the kernel says is available,
    // the 1-minute load average (x1000) and the instances running.
    availableMemoryMb: integer("available_memory_mb"),
    loadMillis: integer("load_millis"),
    instancesRunning: integer("instances_running"),
    // SHA-256 (hex) of the secret the agent proves itself with to the
    // control plane (its instances' environments, its registry
    // credential); the secret stays in the agent's state directory.
    credentialHash: text("credential_hash"),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    index("nodes_status_last_heartbeat_at_idx").on(t.status, t.lastHeartbeatAt),
    check("nodes_status_check", sql`${t.status} in ('active', 'draining', 'dead')`),
    check(
      "nodes_ipv6_prefix_check",
      sql`family(${t.ipv6Prefix}) = 6 and masklen(${t.ipv6Prefix}) = 64`,
    ),
    check("nodes_labels_check", sql`jsonb_typeof(${t.labels}) = 'object'`),
    check("nodes_cpu_millis_check", sql`${t.cpuMillis} > 0`),
    check("nodes_memory_mb_check", sql`${t.memoryMb} > 0`),
    // Scheduling decrements these; a placement that would overcommit fails here.
    check("nodes_free_cpu_millis_check", sql`${t.freeCpuMillis} BETWEEN 0 AND ${t.cpuMillis}`),
    check("nodes_free_memory_mb_check", sql`${t.freeMemoryMb} BETWEEN 0 AND ${t.memoryMb}`),
  ],
);

// Running operator processes. Each registers itself on start and heartbeats,
// so the others (and the dashboard) know who is alive.
export const operators = pgTable(
  "operators",
  {
    id: uuid("id").primaryKey(),
    hostname: text("hostname").notNull(),
    address: text("address").notNull(),
    version: text("version").notNull(),
    startedAt: timestamptz("started_at").notNull().defaultNow(),
    lastHeartbeatAt: timestamptz("last_heartbeat_at").notNull().defaultNow(),
    createdAt: createdAt(),
  },
  (t) => [index("operators_last_heartbeat_at_idx").on(t.lastHeartbeatAt)],
);

// One copy of a deployment on one node. The operator writes desired_state; the
// node agent converges and reports state. Instance rows must be removed before
// their deployment, node or image can be.
export const instances = pgTable(
  "instances",
  {
    id: uuid("id").primaryKey(),
    deploymentId: uuid("deployment_id")
      .notNull()
      .references(() => deployments.id, { onDelete: "restrict" }),
    nodeId: uuid("node_id")
      .notNull()
      .references(() => nodes.id, { onDelete: "restrict" }),
    imageId: uuid("image_id")
      .notNull()
      .references(() => images.id, { onDelete: "restrict" }),
    desiredState: text("desired_state").notNull().default("running"),
    state: text("state").notNull().default("pending"),
    stateReason: text("state_reason"),
    // A single address (/128) inside its node's /64, unique in the cluster.
    ipv6Address: inet("ipv6_address").notNull().unique(),
    port: integer("port").notNull(),
    cpuMillis: integer("cpu_millis").notNull(),
    memoryMb: integer("memory_mb").notNull(),
    restartCount: integer("restart_count").notNull().default(0),
    // When the capacity this instance reserved on its node was given back
    // (it stopped for good); null while it holds its reservation.
    capacityReleasedAt: timestamptz("capacity_released_at"),
    startedAt: timestamptz("started_at"),
    // When it first started, its image pulled: the health deadline counts
    // from here. Unlike started_at, a restart does not move it.
    firstStartedAt: timestamptz("first_started_at"),
    stoppedAt: timestamptz("stopped_at"),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    index("instances_node_id_desired_state_idx").on(t.nodeId, t.desiredState),
    index("instances_deployment_id_idx").on(t.deploymentId),
    index("instances_image_id_idx").on(t.imageId),
    check("instances_desired_state_check", sql`${t.desiredState} in ('running', 'stopped')`),
    check(
      "instances_state_check",
      sql`${t.state} in ('pending', 'pulling', 'starting', 'healthy', 'unhealthy', 'stopping', 'stopped', 'failed')`,
    ),
    // pgx scans inet into netip.Addr only for a full-length mask.
    check(
      "instances_ipv6_address_check",
      sql`family(${t.ipv6Address}) = 6 and masklen(${t.ipv6Address}) = 128`,
    ),
    check("instances_port_check", sql`${t.port} between 1 and 65535`),
    check("instances_cpu_millis_check", sql`${t.cpuMillis} > 0`),
    check("instances_memory_mb_check", sql`${t.memoryMb} > 0`),
    check("instances_restart_count_check", sql`${t.restartCount} >= 0`),
  ],
);

// Custom domains of a project. Anyone may claim a name for their project, but
// only one claim per name can be verified; the edge routes verified names only.
export const domains = pgTable(
  "domains",
  {
    id: uuid("id").primaryKey(),
    projectId: uuid("project_id")
      .notNull()
      .references(() => projects.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    status: text("status").notNull().default("pending"),
    verificationToken: text("verification_token").notNull(),
    verifiedAt: timestamptz("verified_at"),
    lastCheckedAt: timestamptz("last_checked_at"),
    failureReason: text("failure_reason"),
    // Re-verifications of a verified domain that failed in a row; at the
    // limit the domain is failed and the edge stops serving it.
    failedRechecks: integer("failed_rechecks").notNull().default(0),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    unique("domains_project_id_name_unique").on(t.projectId, t.name),
    check("domains_failed_rechecks_check", sql`${t.failedRechecks} >= 0`),
    uniqueIndex("domains_name_verified_idx").on(t.name).where(sql`${t.status} = 'verified'`),
    check(
      "domains_name_check",
      sql`length(${t.name}) <= 253 and ${t.name} ~ ${sql.raw(`'${hostnamePattern}'`)}`,
    ),
    check("domains_status_check", sql`${t.status} in ('pending', 'verified', 'failed')`),
    check("domains_verified_at_check", sql`${t.status} <> 'verified' or ${t.verifiedAt} is not null`),
  ],
);

// Every project that ever had a custom domain verified, kept after the
// domain (or the project) is removed: a name left pointing at the edge by a
// dangling CNAME, or a customer's wildcard, must not pass to another project
// on the CNAME alone. No foreign key, on purpose: the history outlives both.
export const domainClaims = pgTable(
  "domain_claims",
  {
    name: text("name").notNull(),
    projectId: uuid("project_id").notNull(),
    firstVerifiedAt: timestamptz("first_verified_at").notNull().defaultNow(),
    lastVerifiedAt: timestamptz("last_verified_at").notNull().defaultNow(),
  },
  (t) => [primaryKey({ name: "domain_claims_pkey", columns: [t.name, t.projectId] })],
);

// ACME storage (certificates, account keys, OCSP staples) shared by all edge
// replicas, as a key/value store in the shape certmagic's Storage expects.
export const certificates = pgTable("certificates", {
  key: text("key").primaryKey(),
  value: bytea("value").notNull(),
  modifiedAt: timestamptz("modified_at").notNull().defaultNow(),
});

// Locks around ACME operations so that only one edge replica obtains or renews
// a given certificate. A lock is free once expires_at has passed.
export const certificateLocks = pgTable(
  "certificate_locks",
  {
    name: text("name").primaryKey(),
    holder: text("holder").notNull(),
    expiresAt: timestamptz("expires_at").notNull(),
    createdAt: createdAt(),
  },
);

// GitHub webhook deliveries seen, keyed by X-GitHub-Delivery so that a
// redelivery is recognised and not acted on twice.
export const webhookDeliveries = pgTable(
  "webhook_deliveries",
  {
    id: uuid("id").primaryKey(),
    deliveryId: text("delivery_id").notNull().unique(),
    event: text("event").notNull(),
    payloadSha256: text("payload_sha256").notNull(),
    status: text("status").notNull().default("received"),
    error: text("error"),
    receivedAt: timestamptz("received_at").notNull().defaultNow(),
    processedAt: timestamptz("processed_at"),
  },
  (t) => [
    index("webhook_deliveries_received_at_idx").on(t.receivedAt),
    check(
      "webhook_deliveries_status_check",
      sql`${t.status} in ('received', 'processed', 'ignored', 'failed')`,
    ),
    check("webhook_deliveries_payload_sha256_check", sql`${t.payloadSha256} ~ '^[a-f0-9]{64}$'`),
    check("webhook_deliveries_failed_check", sql`${t.status} <> 'failed' or ${t.error} is not null`),
  ],
);

// Fixed-window request counters shared by every API process, so that a
// limit holds however many replicas run behind the load balancer. key names
// the limit and its subject (e.g. "signin:ip:203.0.113.7").
export const rateLimitCounters = pgTable(
  "rate_limit_counters",
  {
    key: text("key").notNull(),
    windowStart: timestamptz("window_start").notNull(),
    count: integer("count").notNull().default(0),
  },
  (t) => [
    primaryKey({ name: "rate_limit_counters_pkey", columns: [t.key, t.windowStart] }),
    index("rate_limit_counters_window_start_idx").on(t.windowStart),
    check("rate_limit_counters_key_check", sql`length(${t.key}) between 1 and 200`),
  ],
);
