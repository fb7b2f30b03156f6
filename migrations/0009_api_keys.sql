-- Admin API keys: each belongs to one community and acts only inside its
-- tenant transaction. The key itself is shown once, at creation; only its
-- SHA-256 is stored (keys are 256 random bits, so a fast hash is enough: there
-- is nothing to brute-force). The prefix is public, printed in listings and
-- logs so a leaked or misused key can be identified without its secret.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    community_id uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix       text        NOT NULL UNIQUE CHECK (prefix ~ '^[0-9a-f]{12}$'),
    secret_hash  bytea       NOT NULL CHECK (length(secret_hash) = 32),
    scopes       text[]      NOT NULL
                             CHECK (cardinality(scopes) >= 1
                                    AND scopes <@ ARRAY['read', 'rules:write', 'badges:write',
                                                        'members:write', 'webhooks:write']),
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    UNIQUE (community_id, id)
);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
-- A key's secret and scopes never change; revoking is the only update.
GRANT SELECT, INSERT ON api_keys TO gatehouse_app;
GRANT UPDATE (revoked_at) ON api_keys TO gatehouse_app;

-- Which key is this? Runs before any tenant is known (the key is what names
-- the tenant), so it is a SECURITY DEFINER function like resolve_community:
-- it answers only for an exact (prefix, hash) match of a live key, reveals
-- nothing about other keys, and records when the key was last used (at
-- most once a minute, so a busy key does not turn every read into a write).
-- No caching anywhere: a revoked key stops working on its next request.
CREATE FUNCTION authenticate_api_key(p_prefix text, p_hash bytea)
RETURNS TABLE (key_id uuid, community_id uuid, discord_guild_id bigint, scopes text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    UPDATE public.api_keys k
       SET last_used_at = now()
      FROM public.communities c
     WHERE k.prefix = p_prefix AND k.secret_hash = p_hash
       AND k.revoked_at IS NULL
       AND (k.expires_at IS NULL OR k.expires_at > now())
       AND c.id = k.community_id
       AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
    RETURNING k.id, k.community_id, c.discord_guild_id, k.scopes;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT k.id, k.community_id, c.discord_guild_id, k.scopes
          FROM public.api_keys k
          JOIN public.communities c ON c.id = k.community_id
         WHERE k.prefix = p_prefix AND k.secret_hash = p_hash
           AND k.revoked_at IS NULL
           AND (k.expires_at IS NULL OR k.expires_at > now());
    END IF;
END
$$;

GRANT SELECT, UPDATE ON api_keys TO gatehouse_definer;
ALTER FUNCTION authenticate_api_key(text, bytea) OWNER TO gatehouse_definer;
REVOKE ALL ON FUNCTION authenticate_api_key(text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION authenticate_api_key(text, bytea) TO gatehouse_app;

-- Audit log reads for the admin API: keyset pages newest first, filtered by
-- action or actor, within one community.
CREATE INDEX audit_logs_community_id_idx ON audit_logs (community_id, id DESC);

-- Member lists page by Discord user id.
-- (profiles (community_id, discord_user_id) is already indexed by its UNIQUE.)

-- When the periodic re-check last finished a pass over the community, for
-- the sync status admins read when roles lag.
ALTER TABLE communities ADD COLUMN recheck_pass_at timestamptz;
