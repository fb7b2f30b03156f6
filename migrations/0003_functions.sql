-- SQL helpers. The store's tenant transaction sets the tenant with one
-- pipelined set_config call; these wrappers are for people at a psql prompt
-- and for SQL written elsewhere, and behave identically.

-- Transaction-local on purpose: a session-level SET would outlive the
-- transaction and, through PgBouncer's transaction pooling, leak the tenant to
-- whichever client gets this server connection next.
CREATE FUNCTION set_tenant_context(tenant uuid) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT set_config('app.current_tenant', tenant::text, true);
$$;

CREATE FUNCTION clear_tenant_context() RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT set_config('app.current_tenant', '', true);
$$;

-- Appends an audit row for the current tenant. SECURITY INVOKER: the row goes
-- through the same INSERT policy as any other, so it cannot name another
-- tenant and fails without one.
CREATE FUNCTION audit_action(
    p_actor_type  text,
    p_actor_id    text,
    p_action      text,
    p_target_type text  DEFAULT NULL,
    p_target_id   text  DEFAULT NULL,
    p_metadata    jsonb DEFAULT '{}',
    p_ip_address  inet  DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    tenant uuid := nullif(current_setting('app.current_tenant', true), '')::uuid;
    new_id bigint;
BEGIN
    IF tenant IS NULL THEN
        RAISE EXCEPTION 'audit_action needs a tenant: call it inside a tenant transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO audit_logs (community_id, actor_type, actor_id, action, target_type, target_id, metadata, ip_address)
    VALUES (tenant, p_actor_type, p_actor_id, p_action, p_target_type, p_target_id,
            coalesce(p_metadata, '{}'), p_ip_address)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Cross-tenant entry points. Both are SECURITY DEFINER functions owned by
-- gatehouse_definer (BYPASSRLS, NOLOGIN), each doing exactly one narrow thing,
-- with a pinned search_path so a caller cannot shadow the tables they touch.

-- Which community is this Discord guild? Needed before a tenant transaction
-- can start, because events arrive keyed by guild, not by community.
CREATE FUNCTION resolve_community(p_guild_id bigint) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT id FROM public.communities WHERE discord_guild_id = p_guild_id;
$$;

-- Create the community for a guild, or reactivate and rename an existing one.
-- Returns its id. The community's own tenant transaction does the rest.
CREATE FUNCTION provision_community(p_guild_id bigint, p_name text) RETURNS uuid
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO public.communities AS c (discord_guild_id, name)
    VALUES (p_guild_id, p_name)
    ON CONFLICT (discord_guild_id) DO UPDATE
        SET name = excluded.name, active = true
    RETURNING c.id;
$$;

GRANT SELECT, INSERT, UPDATE ON communities TO gatehouse_definer;
ALTER FUNCTION resolve_community(bigint) OWNER TO gatehouse_definer;
ALTER FUNCTION provision_community(bigint, text) OWNER TO gatehouse_definer;

REVOKE ALL ON FUNCTION set_tenant_context(uuid), clear_tenant_context(),
    audit_action(text, text, text, text, text, jsonb, inet),
    resolve_community(bigint), provision_community(bigint, text),
    touch_updated_at()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION set_tenant_context(uuid), clear_tenant_context(),
    audit_action(text, text, text, text, text, jsonb, inet),
    resolve_community(bigint), provision_community(bigint, text)
    TO gatehouse_app;
