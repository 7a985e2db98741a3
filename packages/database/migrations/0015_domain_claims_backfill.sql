-- Domains verified before claims were recorded count as claims too, so
-- that a name verified today cannot pass to another project on a dangling
-- CNAME tomorrow.
INSERT INTO domain_claims (name, project_id, first_verified_at, last_verified_at)
SELECT name, project_id, coalesce(verified_at, now()), coalesce(verified_at, now())
FROM domains
WHERE status = 'verified'
ON CONFLICT (name, project_id) DO NOTHING;
