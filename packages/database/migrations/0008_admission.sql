ALTER TABLE "users" ADD COLUMN "admitted" boolean DEFAULT false NOT NULL;--> statement-breakpoint
-- Users from before admission existed were using the platform: keep them in.
UPDATE "users" SET "admitted" = true;
