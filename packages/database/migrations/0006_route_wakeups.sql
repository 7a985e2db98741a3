-- Wakes the edges when a route may have changed (LISTEN zeitwork_routes).
-- The payload is the project whose routes changed, so an edge rebuilds
-- just that project's hosts; an empty payload (a node changed, which can
-- touch any project) asks for a full rebuild. Postgres folds identical
-- notifications of one transaction into one, so an activation that touches
-- many rows of one project wakes each edge once. Polling remains the
-- safety net.
CREATE FUNCTION zeitwork_routes_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  project uuid;
BEGIN
  IF TG_TABLE_NAME = 'instances' THEN
    SELECT project_id INTO project FROM deployments
    WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.deployment_id ELSE NEW.deployment_id END;
    -- A deleted deployment cascades to its instances: the deployments
    -- row may already be gone, and its project then has nothing to route.
    PERFORM pg_notify('zeitwork_routes', coalesce(project::text, ''));
  ELSIF TG_TABLE_NAME = 'projects' THEN
    PERFORM pg_notify('zeitwork_routes', CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END::text);
  ELSIF TG_TABLE_NAME = 'domains' THEN
    IF TG_OP <> 'INSERT' THEN
      PERFORM pg_notify('zeitwork_routes', OLD.project_id::text);
    END IF;
    IF TG_OP <> 'DELETE' THEN
      PERFORM pg_notify('zeitwork_routes', NEW.project_id::text);
    END IF;
  ELSE
    PERFORM pg_notify('zeitwork_routes', '');
  END IF;
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
