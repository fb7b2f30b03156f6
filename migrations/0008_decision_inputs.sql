-- Whether a community's arrival has been announced (its
-- `community.provisioned` audit row written) is recorded on the community
-- itself. Until now the worker decided it by reading the audit log, which
-- made a record of what happened an input to what happens next.
ALTER TABLE communities ADD COLUMN announced_at timestamptz;

-- Backfill from the log. The owner is subject to FORCE ROW LEVEL SECURITY
-- like everyone else, so the policies are lifted for this one statement,
-- inside this migration's transaction, and put back before it commits.
ALTER TABLE communities NO FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_logs NO FORCE ROW LEVEL SECURITY;
UPDATE communities c
   SET announced_at = a.first_at
  FROM (SELECT community_id, min(created_at) AS first_at
          FROM audit_logs
         WHERE action = 'community.provisioned'
         GROUP BY community_id) a
 WHERE a.community_id = c.id;
ALTER TABLE communities FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_logs FORCE ROW LEVEL SECURITY;

-- The wallet each role decision was made with. A decision made with a
-- wallet the member no longer uses earns no grace period: grace rides out a
-- flapping balance, it does not keep what an old wallet earned.
ALTER TABLE role_grants ADD COLUMN wallet_address text
    CHECK (wallet_address ~ '^0x[0-9a-f]{40}$');

ALTER TABLE role_grants NO FORCE ROW LEVEL SECURITY;
ALTER TABLE profiles NO FORCE ROW LEVEL SECURITY;
UPDATE role_grants g
   SET wallet_address = p.wallet_address
  FROM profiles p
 WHERE p.community_id = g.community_id AND p.id = g.profile_id;
ALTER TABLE role_grants FORCE ROW LEVEL SECURITY;
ALTER TABLE profiles FORCE ROW LEVEL SECURITY;
