-- Dashboard sessions. A session belongs to a person (a Discord user), not to
-- a community: it names the guilds Discord last said they may administer,
-- and each request narrows that to the one community it addresses. So this
-- is not a tenant table, and the runtime role gets no grant on it at all:
-- it reaches a session only through the functions below, and only by the
-- hash of an id it was shown (it cannot list, count or read other sessions).
--
-- Only the SHA-256 of the 256-bit random session id is stored: a copy of
-- this table does not log anyone in. The Discord tokens (needed to re-read
-- permissions) are sealed by the api process with a key derived from its
-- session secret, bound to the id hash, so the database never holds them in
-- plaintext either.
CREATE TABLE web_sessions (
    id_hash                bytea       PRIMARY KEY CHECK (length(id_hash) = 32),
    discord_user_id        bigint      NOT NULL CHECK (discord_user_id > 0),
    username               text        NOT NULL CHECK (length(username) <= 200),
    sealed_tokens          bytea       NOT NULL CHECK (length(sealed_tokens) <= 8192),
    -- Guilds where Discord reported Administrator, Manage Server or
    -- ownership at the last read; whether the bot is there is checked on use.
    admin_guilds           bigint[]    NOT NULL CHECK (cardinality(admin_guilds) <= 1000),
    permissions_checked_at timestamptz NOT NULL DEFAULT now(),
    created_at             timestamptz NOT NULL DEFAULT now(),
    last_seen_at           timestamptz NOT NULL DEFAULT now(),
    expires_at             timestamptz NOT NULL
);
CREATE INDEX web_sessions_expires_at_idx ON web_sessions (expires_at);
CREATE INDEX web_sessions_last_seen_at_idx ON web_sessions (last_seen_at);

-- No policy: nobody but a BYPASSRLS role sees a row, even if a grant is
-- added by mistake later.
ALTER TABLE web_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE web_sessions FORCE ROW LEVEL SECURITY;
REVOKE ALL ON web_sessions FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON web_sessions TO gatehouse_definer;

CREATE FUNCTION web_session_create(
    p_id_hash bytea, p_user bigint, p_username text, p_sealed bytea,
    p_admin_guilds bigint[], p_lifetime_secs bigint
) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO public.web_sessions
        (id_hash, discord_user_id, username, sealed_tokens, admin_guilds, expires_at)
    VALUES (p_id_hash, p_user, p_username, p_sealed, p_admin_guilds, now() + p_lifetime_secs * interval '1 second');
$$;

-- The live session with this id hash, or nothing. A session idle longer than
-- p_idle_secs or past its absolute expiry is deleted here, so an expired id is
-- refused even before the pruner runs. Marks it seen at most once a minute (or a quarter of the idle
-- limit, when that is shorter: a busy dashboard should not turn every read into a write).
CREATE FUNCTION web_session_get(p_id_hash bytea, p_idle_secs bigint)
RETURNS TABLE (discord_user_id bigint, username text, sealed_tokens bytea,
               admin_guilds bigint[], permissions_checked_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM public.web_sessions s
     WHERE s.id_hash = p_id_hash
       AND (s.expires_at <= now() OR s.last_seen_at <= now() - p_idle_secs * interval '1 second');
    UPDATE public.web_sessions s SET last_seen_at = now()
     WHERE s.id_hash = p_id_hash
       AND s.last_seen_at < now() - least(interval '1 minute', p_idle_secs * interval '1 second' / 4);
    RETURN QUERY
    SELECT s.discord_user_id, s.username, s.sealed_tokens, s.admin_guilds,
           s.permissions_checked_at
      FROM public.web_sessions s
     WHERE s.id_hash = p_id_hash;
END
$$;

-- After a permission re-read: the guilds Discord now reports (possibly
-- fewer), and the tokens if they were refreshed.
CREATE FUNCTION web_session_set_permissions(
    p_id_hash bytea, p_sealed bytea, p_admin_guilds bigint[]
) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH changed AS (
        UPDATE public.web_sessions
           SET sealed_tokens = p_sealed, admin_guilds = p_admin_guilds,
               permissions_checked_at = now()
         WHERE id_hash = p_id_hash
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM changed);
$$;

CREATE FUNCTION web_session_delete(p_id_hash bytea) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM public.web_sessions WHERE id_hash = p_id_hash RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone);
$$;

CREATE FUNCTION web_sessions_prune(p_idle_secs bigint) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM public.web_sessions
         WHERE expires_at <= now() OR last_seen_at <= now() - p_idle_secs * interval '1 second'
        RETURNING 1)
    SELECT count(*) FROM gone;
$$;

-- Which of these guilds have an active community (the bot is there), with
-- the community's id and name: the dashboard's list of what a person may
-- administer. Like resolve_community it reveals ids and the server's name
-- (which follows Discord), never a tenant's rows.
CREATE FUNCTION web_active_communities(p_guilds bigint[])
RETURNS TABLE (community_id uuid, discord_guild_id bigint, name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.id, c.discord_guild_id, c.name
      FROM public.communities c
     WHERE c.discord_guild_id = ANY (p_guilds) AND c.active
     ORDER BY c.name, c.discord_guild_id;
$$;

ALTER FUNCTION web_session_create(bytea, bigint, text, bytea, bigint[], bigint) OWNER TO gatehouse_definer;
ALTER FUNCTION web_session_get(bytea, bigint) OWNER TO gatehouse_definer;
ALTER FUNCTION web_session_set_permissions(bytea, bytea, bigint[]) OWNER TO gatehouse_definer;
ALTER FUNCTION web_session_delete(bytea) OWNER TO gatehouse_definer;
ALTER FUNCTION web_sessions_prune(bigint) OWNER TO gatehouse_definer;
ALTER FUNCTION web_active_communities(bigint[]) OWNER TO gatehouse_definer;
REVOKE ALL ON FUNCTION web_session_create(bytea, bigint, text, bytea, bigint[], bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION web_session_get(bytea, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION web_session_set_permissions(bytea, bytea, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION web_session_delete(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION web_sessions_prune(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION web_active_communities(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION web_session_create(bytea, bigint, text, bytea, bigint[], bigint) TO gatehouse_app;
GRANT EXECUTE ON FUNCTION web_session_get(bytea, bigint) TO gatehouse_app;
GRANT EXECUTE ON FUNCTION web_session_set_permissions(bytea, bytea, bigint[]) TO gatehouse_app;
GRANT EXECUTE ON FUNCTION web_session_delete(bytea) TO gatehouse_app;
GRANT EXECUTE ON FUNCTION web_sessions_prune(bigint) TO gatehouse_app;
GRANT EXECUTE ON FUNCTION web_active_communities(bigint[]) TO gatehouse_app;
