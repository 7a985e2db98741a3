CREATE TABLE "device_authorizations" (
	"id" uuid PRIMARY KEY NOT NULL,
	"device_code_hash" "bytea" NOT NULL,
	"user_code" text NOT NULL,
	"client_name" text NOT NULL,
	"user_id" uuid,
	"approved_at" timestamp with time zone,
	"denied_at" timestamp with time zone,
	"token_id" uuid,
	"consumed_at" timestamp with time zone,
	"last_polled_at" timestamp with time zone,
	"expires_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "device_authorizations_device_code_hash_unique" UNIQUE("device_code_hash"),
	CONSTRAINT "device_authorizations_device_code_hash_check" CHECK (length("device_authorizations"."device_code_hash") = 32),
	CONSTRAINT "device_authorizations_user_code_check" CHECK ("device_authorizations"."user_code" ~ '^[A-Z0-9]{4}-[A-Z0-9]{4}$'),
	CONSTRAINT "device_authorizations_client_name_check" CHECK (length("device_authorizations"."client_name") between 1 and 100),
	CONSTRAINT "device_authorizations_approved_check" CHECK ("device_authorizations"."approved_at" is null or "device_authorizations"."user_id" is not null),
	CONSTRAINT "device_authorizations_decided_once_check" CHECK ("device_authorizations"."approved_at" is null or "device_authorizations"."denied_at" is null)
);
--> statement-breakpoint
CREATE TABLE "rate_limit_counters" (
	"key" text NOT NULL,
	"window_start" timestamp with time zone NOT NULL,
	"count" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "rate_limit_counters_pkey" PRIMARY KEY("key","window_start"),
	CONSTRAINT "rate_limit_counters_key_check" CHECK (length("rate_limit_counters"."key") between 1 and 200)
);
--> statement-breakpoint
DROP INDEX "deployments_project_id_active_idx";--> statement-breakpoint
ALTER TABLE "deployments" ADD COLUMN "environment" text DEFAULT 'production' NOT NULL;--> statement-breakpoint
ALTER TABLE "deployments" ADD COLUMN "pushed_by" text;--> statement-breakpoint
ALTER TABLE "device_authorizations" ADD CONSTRAINT "device_authorizations_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "device_authorizations" ADD CONSTRAINT "device_authorizations_token_id_api_tokens_id_fk" FOREIGN KEY ("token_id") REFERENCES "public"."api_tokens"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "device_authorizations_user_code_pending_idx" ON "device_authorizations" USING btree ("user_code") WHERE "device_authorizations"."consumed_at" is null and "device_authorizations"."denied_at" is null;--> statement-breakpoint
CREATE INDEX "device_authorizations_expires_at_idx" ON "device_authorizations" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "rate_limit_counters_window_start_idx" ON "rate_limit_counters" USING btree ("window_start");--> statement-breakpoint
CREATE INDEX "deployments_project_id_github_ref_idx" ON "deployments" USING btree ("project_id","github_ref") WHERE "deployments"."environment" = 'preview';--> statement-breakpoint
CREATE UNIQUE INDEX "deployments_project_id_active_idx" ON "deployments" USING btree ("project_id") WHERE "deployments"."status" = 'active' and "deployments"."environment" = 'production';--> statement-breakpoint
ALTER TABLE "deployments" ADD CONSTRAINT "deployments_environment_check" CHECK ("deployments"."environment" in ('production', 'preview'));