-- One Postgres role per platform role, holding only the table privileges
-- that role's queries need, so that the credentials of one machine (a
-- worker node, an edge) do not open every table. These are NOLOGIN group
-- roles: whoever deploys (`zeitwork dev`, bootstrap, a DBA) creates the
-- login users and makes each a member of its role's group. The migrating
-- user owns the schema and keeps every privilege.
--
-- Roles are global to the Postgres cluster while migrations run per
-- database, several at once in tests: a role that exists already (or that
-- a concurrent migration is creating) is not an error. Creating them needs
-- CREATEROLE; where the migrating user lacks it, a DBA creates the five
-- NOLOGIN roles first and the migration only grants.
--
-- internal/db's TestEveryTableHasAGrantDecision holds the same decisions:
-- a table added later without a GRANT here or in a later migration fails it.
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['zeitwork_api', 'zeitwork_operator', 'zeitwork_builder', 'zeitwork_nodeagent', 'zeitwork_edge'] LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
      END;
    END IF;
  END LOOP;
END
$$;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO zeitwork_api, zeitwork_operator, zeitwork_builder, zeitwork_nodeagent, zeitwork_edge;
--> statement-breakpoint
-- api: the public API serves members everything of theirs, signs them in
-- and takes GitHub's webhooks. It never holds certificates or speaks for
-- operators.
GRANT SELECT, INSERT, UPDATE, DELETE ON
  api_tokens, build_logs, builds, deployments, device_authorizations, domains, environment_variables,
  github_installations, images, instances, organisation_members, organisations, projects,
  rate_limit_counters, sessions, users, waitlist, webhook_deliveries
  TO zeitwork_api;
--> statement-breakpoint
GRANT SELECT ON nodes TO zeitwork_api;
--> statement-breakpoint
-- operator: scheduling, deployment lifecycle, node liveness, custom domains'
-- checks and the management API (images, instances, nodes, builds).
GRANT SELECT, INSERT, UPDATE, DELETE ON
  builds, deployments, domains, images, instances, operators
  TO zeitwork_operator;
--> statement-breakpoint
GRANT SELECT, UPDATE ON nodes, projects TO zeitwork_operator;
--> statement-breakpoint
-- builder: claims builds, writes their logs and images, reads the project
-- and its GitHub installation to fetch the source.
GRANT SELECT, INSERT ON build_logs TO zeitwork_builder;
--> statement-breakpoint
GRANT SELECT, UPDATE ON builds, deployments TO zeitwork_builder;
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE ON images TO zeitwork_builder;
--> statement-breakpoint
GRANT SELECT ON github_installations, projects TO zeitwork_builder;
--> statement-breakpoint
-- nodeagent: registers and heartbeats its node, converges the instances
-- placed on it and reads what they run. environment_variables is read to
-- hand instances their variables.
GRANT SELECT, INSERT, UPDATE, DELETE ON instances TO zeitwork_nodeagent;
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE ON nodes TO zeitwork_nodeagent;
--> statement-breakpoint
GRANT SELECT ON builds, deployments, environment_variables, images, projects TO zeitwork_nodeagent;
--> statement-breakpoint
-- edge: reads routes; keeps certificates and their locks (ACME storage).
GRANT SELECT ON deployments, domains, instances, nodes, projects TO zeitwork_edge;
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE, DELETE ON certificates, certificate_locks TO zeitwork_edge;
--> statement-breakpoint
-- River: the api enqueues, the operator and the builder enqueue and work.
GRANT SELECT, INSERT, UPDATE, DELETE ON river_job, river_leader, river_queue, river_notification
  TO zeitwork_api, zeitwork_operator, zeitwork_builder;
--> statement-breakpoint
GRANT SELECT ON river_migration TO zeitwork_api, zeitwork_operator, zeitwork_builder;
--> statement-breakpoint
GRANT USAGE, SELECT ON SEQUENCE river_job_id_seq, river_notification_id_seq
  TO zeitwork_api, zeitwork_operator, zeitwork_builder;
--> statement-breakpoint
-- Added with the hardening that landed beside these grants: custom-domain
-- claims are recorded and read by whoever verifies a domain (the api on a
-- member's "check now", the operator's sweep); the operator decrypts a
-- node's instances' variables for it (GET /v1/node/instances/{id}/environment).
GRANT SELECT, INSERT, UPDATE ON domain_claims TO zeitwork_api, zeitwork_operator;
--> statement-breakpoint
GRANT SELECT ON environment_variables TO zeitwork_operator;
