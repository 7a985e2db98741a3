ALTER TABLE "nodes" DROP CONSTRAINT "nodes_free_cpu_millis_check";--> statement-breakpoint
ALTER TABLE "nodes" DROP CONSTRAINT "nodes_free_memory_mb_check";--> statement-breakpoint
ALTER TABLE "nodes" ADD CONSTRAINT "nodes_free_cpu_millis_check" CHECK ("nodes"."free_cpu_millis" BETWEEN 0 AND "nodes"."cpu_millis");--> statement-breakpoint
ALTER TABLE "nodes" ADD CONSTRAINT "nodes_free_memory_mb_check" CHECK ("nodes"."free_memory_mb" BETWEEN 0 AND "nodes"."memory_mb");