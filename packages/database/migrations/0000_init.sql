CREATE TABLE "build_logs" (
	"id" uuid PRIMARY KEY NOT NULL,
	"build_id" uuid NOT NULL,
	"stream" text NOT NULL,
	"line" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "build_logs_stream_check" CHECK ("build_logs"."stream" in ('stdout', 'stderr', 'system'))
);
--> statement-breakpoint
CREATE TABLE "builds" (
	"id" uuid PRIMARY KEY NOT NULL,
	"deployment_id" uuid NOT NULL,
	"status" text DEFAULT 'queued' NOT NULL,
	"attempt" integer DEFAULT 1 NOT NULL,
	"builder_id" text,
	"detected_kind" text,
	"deadline_at" timestamp with time zone,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"failure_reason" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "builds_deployment_id_attempt_unique" UNIQUE("deployment_id","attempt"),
	CONSTRAINT "builds_status_check" CHECK ("builds"."status" in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
	CONSTRAINT "builds_attempt_check" CHECK ("builds"."attempt" >= 1),
	CONSTRAINT "builds_failure_reason_check" CHECK ("builds"."status" <> 'failed' or "builds"."failure_reason" is not null)
);
--> statement-breakpoint
CREATE TABLE "certificate_locks" (
	"name" text PRIMARY KEY NOT NULL,
	"holder" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "certificates" (
	"key" text PRIMARY KEY NOT NULL,
	"value" "bytea" NOT NULL,
	"modified_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "deployments" (
	"id" uuid PRIMARY KEY NOT NULL,
	"project_id" uuid NOT NULL,
	"status" text DEFAULT 'queued' NOT NULL,
	"failure_reason" text,
	"source_type" text NOT NULL,
	"github_commit_sha" text,
	"github_ref" text,
	"commit_message" text,
	"source_archive_key" text,
	"image_id" uuid,
	"replicas" integer DEFAULT 3 NOT NULL,
	"created_by_user_id" uuid,
	"building_at" timestamp with time zone,
	"deploying_at" timestamp with time zone,
	"active_at" timestamp with time zone,
	"retiring_at" timestamp with time zone,
	"stop_at" timestamp with time zone,
	"stopped_at" timestamp with time zone,
	"failed_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "deployments_id_project_id_unique" UNIQUE("id","project_id"),
	CONSTRAINT "deployments_status_check" CHECK ("deployments"."status" in ('queued', 'building', 'deploying', 'active', 'retiring', 'stopped', 'failed')),
	CONSTRAINT "deployments_failure_reason_check" CHECK ("deployments"."status" <> 'failed' or "deployments"."failure_reason" is not null),
	CONSTRAINT "deployments_source_type_check" CHECK ("deployments"."source_type" in ('github', 'upload')),
	CONSTRAINT "deployments_source_check" CHECK (("deployments"."source_type" = 'github' and "deployments"."github_commit_sha" is not null) or ("deployments"."source_type" = 'upload' and "deployments"."source_archive_key" is not null)),
	CONSTRAINT "deployments_replicas_check" CHECK ("deployments"."replicas" >= 3),
	CONSTRAINT "deployments_stop_at_check" CHECK ("deployments"."status" <> 'retiring' or "deployments"."stop_at" is not null)
);
--> statement-breakpoint
CREATE TABLE "domains" (
	"id" uuid PRIMARY KEY NOT NULL,
	"project_id" uuid NOT NULL,
	"name" text NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"verification_token" text NOT NULL,
	"verified_at" timestamp with time zone,
	"last_checked_at" timestamp with time zone,
	"failure_reason" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "domains_project_id_name_unique" UNIQUE("project_id","name"),
	CONSTRAINT "domains_name_check" CHECK (length("domains"."name") <= 253 and "domains"."name" ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?[.])+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
	CONSTRAINT "domains_status_check" CHECK ("domains"."status" in ('pending', 'verified', 'failed')),
	CONSTRAINT "domains_verified_at_check" CHECK ("domains"."status" <> 'verified' or "domains"."verified_at" is not null)
);
--> statement-breakpoint
CREATE TABLE "environment_variables" (
	"id" uuid PRIMARY KEY NOT NULL,
	"project_id" uuid NOT NULL,
	"name" text NOT NULL,
	"value_ciphertext" "bytea" NOT NULL,
	"key_id" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "environment_variables_project_id_name_unique" UNIQUE("project_id","name"),
	CONSTRAINT "environment_variables_name_check" CHECK ("environment_variables"."name" ~ '^[A-Za-z_][A-Za-z0-9_]*$')
);
--> statement-breakpoint
CREATE TABLE "github_installations" (
	"id" uuid PRIMARY KEY NOT NULL,
	"github_installation_id" bigint NOT NULL,
	"organisation_id" uuid NOT NULL,
	"account_login" text NOT NULL,
	"account_type" text NOT NULL,
	"suspended_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "github_installations_github_installation_id_unique" UNIQUE("github_installation_id"),
	CONSTRAINT "github_installations_account_type_check" CHECK ("github_installations"."account_type" in ('User', 'Organization'))
);
--> statement-breakpoint
CREATE TABLE "images" (
	"id" uuid PRIMARY KEY NOT NULL,
	"project_id" uuid NOT NULL,
	"build_id" uuid,
	"repository" text NOT NULL,
	"tag" text NOT NULL,
	"digest" text NOT NULL,
	"size_bytes" bigint,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "images_repository_tag_unique" UNIQUE("repository","tag"),
	CONSTRAINT "images_digest_check" CHECK ("images"."digest" ~ '^sha256:[a-f0-9]{64}$'),
	CONSTRAINT "images_size_bytes_check" CHECK ("images"."size_bytes" >= 0)
);
--> statement-breakpoint
CREATE TABLE "instances" (
	"id" uuid PRIMARY KEY NOT NULL,
	"deployment_id" uuid NOT NULL,
	"node_id" uuid NOT NULL,
	"image_id" uuid NOT NULL,
	"desired_state" text DEFAULT 'running' NOT NULL,
	"state" text DEFAULT 'pending' NOT NULL,
	"state_reason" text,
	"ipv6_address" "inet" NOT NULL,
	"port" integer NOT NULL,
	"cpu_millis" integer NOT NULL,
	"memory_mb" integer NOT NULL,
	"restart_count" integer DEFAULT 0 NOT NULL,
	"started_at" timestamp with time zone,
	"stopped_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "instances_ipv6_address_unique" UNIQUE("ipv6_address"),
	CONSTRAINT "instances_desired_state_check" CHECK ("instances"."desired_state" in ('running', 'stopped')),
	CONSTRAINT "instances_state_check" CHECK ("instances"."state" in ('pending', 'pulling', 'starting', 'healthy', 'unhealthy', 'stopping', 'stopped', 'failed')),
	CONSTRAINT "instances_ipv6_address_check" CHECK (family("instances"."ipv6_address") = 6 and masklen("instances"."ipv6_address") = 128),
	CONSTRAINT "instances_port_check" CHECK ("instances"."port" between 1 and 65535),
	CONSTRAINT "instances_cpu_millis_check" CHECK ("instances"."cpu_millis" > 0),
	CONSTRAINT "instances_memory_mb_check" CHECK ("instances"."memory_mb" > 0),
	CONSTRAINT "instances_restart_count_check" CHECK ("instances"."restart_count" >= 0)
);
--> statement-breakpoint
CREATE TABLE "nodes" (
	"id" uuid PRIMARY KEY NOT NULL,
	"hostname" text NOT NULL,
	"internal_address" text NOT NULL,
	"region" text DEFAULT '' NOT NULL,
	"labels" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"cpu_millis" integer NOT NULL,
	"memory_mb" integer NOT NULL,
	"free_cpu_millis" integer NOT NULL,
	"free_memory_mb" integer NOT NULL,
	"ipv6_prefix" "cidr" NOT NULL,
	"status" text DEFAULT 'active' NOT NULL,
	"agent_version" text DEFAULT '' NOT NULL,
	"last_heartbeat_at" timestamp with time zone DEFAULT now() NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "nodes_internal_address_unique" UNIQUE("internal_address"),
	CONSTRAINT "nodes_ipv6_prefix_unique" UNIQUE("ipv6_prefix"),
	CONSTRAINT "nodes_status_check" CHECK ("nodes"."status" in ('active', 'draining', 'dead')),
	CONSTRAINT "nodes_ipv6_prefix_check" CHECK (family("nodes"."ipv6_prefix") = 6 and masklen("nodes"."ipv6_prefix") = 64),
	CONSTRAINT "nodes_labels_check" CHECK (jsonb_typeof("nodes"."labels") = 'object'),
	CONSTRAINT "nodes_cpu_millis_check" CHECK ("nodes"."cpu_millis" > 0),
	CONSTRAINT "nodes_memory_mb_check" CHECK ("nodes"."memory_mb" > 0),
	CONSTRAINT "nodes_free_cpu_millis_check" CHECK ("nodes"."free_cpu_millis" >= 0),
	CONSTRAINT "nodes_free_memory_mb_check" CHECK ("nodes"."free_memory_mb" >= 0)
);
--> statement-breakpoint
CREATE TABLE "operators" (
	"id" uuid PRIMARY KEY NOT NULL,
	"hostname" text NOT NULL,
	"address" text NOT NULL,
	"version" text NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_heartbeat_at" timestamp with time zone DEFAULT now() NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "organisation_members" (
	"id" uuid PRIMARY KEY NOT NULL,
	"organisation_id" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"role" text DEFAULT 'member' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "organisation_members_organisation_id_user_id_unique" UNIQUE("organisation_id","user_id"),
	CONSTRAINT "organisation_members_role_check" CHECK ("organisation_members"."role" in ('owner', 'admin', 'member'))
);
--> statement-breakpoint
CREATE TABLE "organisations" (
	"id" uuid PRIMARY KEY NOT NULL,
	"slug" text NOT NULL,
	"name" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "organisations_slug_unique" UNIQUE("slug"),
	CONSTRAINT "organisations_slug_check" CHECK ("organisations"."slug" ~ '^[a-z0-9][a-z0-9-]{0,62}$')
);
--> statement-breakpoint
CREATE TABLE "projects" (
	"id" uuid PRIMARY KEY NOT NULL,
	"organisation_id" uuid NOT NULL,
	"slug" text NOT NULL,
	"name" text NOT NULL,
	"github_installation_id" uuid,
	"github_repository_id" bigint,
	"github_repository_full_name" text,
	"branch" text DEFAULT 'main' NOT NULL,
	"root_directory" text DEFAULT '' NOT NULL,
	"dockerfile_path" text,
	"port" integer DEFAULT 8080 NOT NULL,
	"replicas" integer DEFAULT 3 NOT NULL,
	"cpu_millis" integer DEFAULT 1000 NOT NULL,
	"memory_mb" integer DEFAULT 512 NOT NULL,
	"health_check_path" text DEFAULT '/' NOT NULL,
	"active_deployment_id" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "projects_slug_unique" UNIQUE("slug"),
	CONSTRAINT "projects_slug_check" CHECK ("projects"."slug" ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
	CONSTRAINT "projects_github_repository_check" CHECK (("projects"."github_repository_id" is null) = ("projects"."github_repository_full_name" is null)),
	CONSTRAINT "projects_branch_check" CHECK ("projects"."branch" <> ''),
	CONSTRAINT "projects_root_directory_check" CHECK ("projects"."root_directory" !~ '(^/|(^|/)[.][.](/|$))'),
	CONSTRAINT "projects_dockerfile_path_check" CHECK ("projects"."dockerfile_path" <> '' and "projects"."dockerfile_path" !~ '(^/|(^|/)[.][.](/|$))'),
	CONSTRAINT "projects_port_check" CHECK ("projects"."port" between 1 and 65535),
	CONSTRAINT "projects_replicas_check" CHECK ("projects"."replicas" >= 3),
	CONSTRAINT "projects_cpu_millis_check" CHECK ("projects"."cpu_millis" > 0),
	CONSTRAINT "projects_memory_mb_check" CHECK ("projects"."memory_mb" > 0),
	CONSTRAINT "projects_health_check_path_check" CHECK ("projects"."health_check_path" like '/%')
);
--> statement-breakpoint
CREATE TABLE "users" (
	"id" uuid PRIMARY KEY NOT NULL,
	"github_user_id" bigint NOT NULL,
	"username" text NOT NULL,
	"name" text,
	"email" text,
	"avatar_url" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "users_github_user_id_unique" UNIQUE("github_user_id")
);
--> statement-breakpoint
CREATE TABLE "waitlist" (
	"id" uuid PRIMARY KEY NOT NULL,
	"email" text NOT NULL,
	"source" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "waitlist_email_unique" UNIQUE("email"),
	CONSTRAINT "waitlist_email_lower_check" CHECK ("waitlist"."email" = lower("waitlist"."email")),
	CONSTRAINT "waitlist_email_format_check" CHECK ("waitlist"."email" ~ '^[^@[:space:]]+@[^@[:space:]]+$')
);
--> statement-breakpoint
CREATE TABLE "webhook_deliveries" (
	"id" uuid PRIMARY KEY NOT NULL,
	"delivery_id" text NOT NULL,
	"event" text NOT NULL,
	"payload_sha256" text NOT NULL,
	"status" text DEFAULT 'received' NOT NULL,
	"error" text,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	"processed_at" timestamp with time zone,
	CONSTRAINT "webhook_deliveries_delivery_id_unique" UNIQUE("delivery_id"),
	CONSTRAINT "webhook_deliveries_status_check" CHECK ("webhook_deliveries"."status" in ('received', 'processed', 'ignored', 'failed')),
	CONSTRAINT "webhook_deliveries_payload_sha256_check" CHECK ("webhook_deliveries"."payload_sha256" ~ '^[a-f0-9]{64}$'),
	CONSTRAINT "webhook_deliveries_failed_check" CHECK ("webhook_deliveries"."status" <> 'failed' or "webhook_deliveries"."error" is not null)
);
--> statement-breakpoint
ALTER TABLE "build_logs" ADD CONSTRAINT "build_logs_build_id_builds_id_fk" FOREIGN KEY ("build_id") REFERENCES "public"."builds"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "builds" ADD CONSTRAINT "builds_deployment_id_deployments_id_fk" FOREIGN KEY ("deployment_id") REFERENCES "public"."deployments"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "deployments" ADD CONSTRAINT "deployments_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "deployments" ADD CONSTRAINT "deployments_image_id_images_id_fk" FOREIGN KEY ("image_id") REFERENCES "public"."images"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "deployments" ADD CONSTRAINT "deployments_created_by_user_id_users_id_fk" FOREIGN KEY ("created_by_user_id") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "domains" ADD CONSTRAINT "domains_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "environment_variables" ADD CONSTRAINT "environment_variables_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "github_installations" ADD CONSTRAINT "github_installations_organisation_id_organisations_id_fk" FOREIGN KEY ("organisation_id") REFERENCES "public"."organisations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "images" ADD CONSTRAINT "images_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "images" ADD CONSTRAINT "images_build_id_builds_id_fk" FOREIGN KEY ("build_id") REFERENCES "public"."builds"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "instances" ADD CONSTRAINT "instances_deployment_id_deployments_id_fk" FOREIGN KEY ("deployment_id") REFERENCES "public"."deployments"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "instances" ADD CONSTRAINT "instances_node_id_nodes_id_fk" FOREIGN KEY ("node_id") REFERENCES "public"."nodes"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "instances" ADD CONSTRAINT "instances_image_id_images_id_fk" FOREIGN KEY ("image_id") REFERENCES "public"."images"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "organisation_members" ADD CONSTRAINT "organisation_members_organisation_id_organisations_id_fk" FOREIGN KEY ("organisation_id") REFERENCES "public"."organisations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "organisation_members" ADD CONSTRAINT "organisation_members_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "projects" ADD CONSTRAINT "projects_organisation_id_organisations_id_fk" FOREIGN KEY ("organisation_id") REFERENCES "public"."organisations"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "projects" ADD CONSTRAINT "projects_github_installation_id_github_installations_id_fk" FOREIGN KEY ("github_installation_id") REFERENCES "public"."github_installations"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "projects" ADD CONSTRAINT "projects_active_deployment_fk" FOREIGN KEY ("active_deployment_id","id") REFERENCES "public"."deployments"("id","project_id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "build_logs_build_id_id_idx" ON "build_logs" USING btree ("build_id","id");--> statement-breakpoint
CREATE INDEX "builds_deadline_at_idx" ON "builds" USING btree ("deadline_at") WHERE "builds"."status" = 'running';--> statement-breakpoint
CREATE INDEX "deployments_project_id_created_at_idx" ON "deployments" USING btree ("project_id","created_at" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "deployments_status_idx" ON "deployments" USING btree ("status");--> statement-breakpoint
CREATE INDEX "deployments_stop_at_idx" ON "deployments" USING btree ("stop_at") WHERE "deployments"."status" = 'retiring';--> statement-breakpoint
CREATE UNIQUE INDEX "deployments_project_id_active_idx" ON "deployments" USING btree ("project_id") WHERE "deployments"."status" = 'active';--> statement-breakpoint
CREATE UNIQUE INDEX "domains_name_verified_idx" ON "domains" USING btree ("name") WHERE "domains"."status" = 'verified';--> statement-breakpoint
CREATE INDEX "github_installations_organisation_id_idx" ON "github_installations" USING btree ("organisation_id");--> statement-breakpoint
CREATE INDEX "images_project_id_idx" ON "images" USING btree ("project_id");--> statement-breakpoint
CREATE INDEX "images_build_id_idx" ON "images" USING btree ("build_id");--> statement-breakpoint
CREATE INDEX "instances_node_id_desired_state_idx" ON "instances" USING btree ("node_id","desired_state");--> statement-breakpoint
CREATE INDEX "instances_deployment_id_idx" ON "instances" USING btree ("deployment_id");--> statement-breakpoint
CREATE INDEX "instances_image_id_idx" ON "instances" USING btree ("image_id");--> statement-breakpoint
CREATE INDEX "nodes_status_last_heartbeat_at_idx" ON "nodes" USING btree ("status","last_heartbeat_at");--> statement-breakpoint
CREATE INDEX "operators_last_heartbeat_at_idx" ON "operators" USING btree ("last_heartbeat_at");--> statement-breakpoint
CREATE INDEX "organisation_members_user_id_idx" ON "organisation_members" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "projects_organisation_id_idx" ON "projects" USING btree ("organisation_id");--> statement-breakpoint
CREATE INDEX "projects_github_installation_id_idx" ON "projects" USING btree ("github_installation_id");--> statement-breakpoint
CREATE INDEX "projects_github_repository_id_idx" ON "projects" USING btree ("github_repository_id");--> statement-breakpoint
CREATE INDEX "webhook_deliveries_received_at_idx" ON "webhook_deliveries" USING btree ("received_at");