-- Wakes node agents when their instances change: every write that assigns an
-- instance to a node or changes what it should be doing notifies that node's
-- agent (LISTEN zeitwork_instances, payload: the node id). Polling remains
-- the safety net; this makes convergence start within milliseconds.
CREATE FUNCTION zeitwork_instances_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('zeitwork_instances', NEW.node_id::text);
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER instances_notify_insert
  AFTER INSERT ON instances
  FOR EACH ROW EXECUTE FUNCTION zeitwork_instances_notify();
--> statement-breakpoint
CREATE TRIGGER instances_notify_desired_state
  AFTER UPDATE OF desired_state ON instances
  FOR EACH ROW WHEN (OLD.desired_state IS DISTINCT FROM NEW.desired_state)
  EXECUTE FUNCTION zeitwork_instances_notify();
