CREATE TABLE "domain_claims" (
	"name" text NOT NULL,
	"project_id" uuid NOT NULL,
	"first_verified_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_verified_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "domain_claims_pkey" PRIMARY KEY("name","project_id")
);
--> statement-breakpoint
ALTER TABLE "domains" ADD COLUMN "failed_rechecks" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "domains" ADD CONSTRAINT "domains_failed_rechecks_check" CHECK ("domains"."failed_rechecks" >= 0);