ALTER TABLE "instances" ADD COLUMN "first_started_at" timestamp with time zone;--> statement-breakpoint
-- Instances that started before the column: their latest start is the best known.
UPDATE "instances" SET "first_started_at" = "started_at" WHERE "started_at" IS NOT NULL;
