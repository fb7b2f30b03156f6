-- Role sync: what each rule last decided for each member, and when members
-- are next re-checked.

CREATE TABLE role_grants (
    community_id    uuid        NOT NULL,
    profile_id      uuid        NOT NULL,
    rule_id         uuid        NOT NULL REFERENCES eligibility_rules (id) ON DELETE CASCADE,
    role_discord_id bigint      NOT NULL CHECK (role_discord_id > 0),
    -- The last decided outcome; NULL until a decision was ever reached
    -- (provider outages decide nothing).
    eligible        boolean,
    -- Since when the member has failed the rule while holding the role: the
    -- role is removed only once this is older than the grace period.
    failing_since   timestamptz,
    detail          text        NOT NULL DEFAULT '',
    checked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, profile_id, rule_id),
    FOREIGN KEY (community_id, profile_id) REFERENCES profiles (community_id, id) ON DELETE CASCADE
);

ALTER TABLE role_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE role_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON role_grants
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
GRANT SELECT, INSERT, UPDATE, DELETE ON role_grants TO gatehouse_app;

-- Periodic re-checks: NULL means "due now" (new members, changed rules).
ALTER TABLE profiles ADD COLUMN next_check_at timestamptz;
CREATE INDEX profiles_due_idx ON profiles (community_id, next_check_at NULLS FIRST) WHERE left_at IS NULL;

-- Which communities exist and are active, for the periodic re-check scan.
-- Reveals ids only, never rows.
CREATE FUNCTION active_communities() RETURNS TABLE (community_id uuid, discord_guild_id bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT id, discord_guild_id FROM public.communities WHERE active ORDER BY id;
$$;
ALTER FUNCTION active_communities() OWNER TO gatehouse_definer;
REVOKE ALL ON FUNCTION active_communities() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION active_communities() TO gatehouse_app;
