-- Wakes the edges when a route may have changed (LISTEN zeitwork_routes, no
-- payload: an edge rebuilds its whole table, so it only needs to know when).
-- Postgres folds identical notifications of one transaction into one, so an
-- activation that touches many rows wakes each edge once. Polling remains
-- the safety net.
CREATE FUNCTION zeitwork_routes_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('zeitwork_routes', '');
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER instances_routes_insert_delete
  AFTER INSERT OR DELETE ON instances
  FOR EACH ROW EXECUTE FUNCTION zeitwork_routes_notify();
--> statement-breakpoint
CREATE TRIGGER instances_routes_update
  AFTER UPDATE ON instances
  FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state
    OR OLD.desired_state IS DISTINCT FROM NEW.desired_state
    OR OLD.node_id IS DISTINCT FROM NEW.node_id)
  EXECUTE FUNCTION zeitwork_routes_notify();
--> statement-breakpoint
CREATE TRIGGER projects_routes
  AFTER INSERT OR DELETE OR UPDATE OF active_deployment_id, slug ON projects
  FOR EACH ROW EXECUTE FUNCTION zeitwork_routes_notify();
--> statement-breakpoint
CREATE TRIGGER domains_routes
  AFTER INSERT OR DELETE OR UPDATE OF status, name, project_id ON domains
  FOR EACH ROW EXECUTE FUNCTION zeitwork_routes_notify();
--> statement-breakpoint
CREATE TRIGGER nodes_routes
  AFTER UPDATE OF status, internal_address ON nodes
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
    OR OLD.internal_address IS DISTINCT FROM NEW.internal_address)
  EXECUTE FUNCTION zeitwork_routes_notify();
