ALTER TABLE "nodes" ADD COLUMN "available_memory_mb" integer;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "load_millis" integer;--> statement-breakpoint
ALTER TABLE "nodes" ADD COLUMN "instances_running" integer;