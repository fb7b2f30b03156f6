-- The hottest tenant statements as PL/pgSQL functions, planned once per
-- server connection instead of at every execution.
--
-- The store sends unnamed statements: PgBouncer 1.18 in transaction mode
-- cannot carry named prepared statements from one transaction to the next
-- server connection. PostgreSQL then parses, rewrites (expanding the
-- row-level security policies) and plans every statement every time: a
-- third of its time under `gatehouse bench pipeline`, most of what
-- row-level security costs under `gatehouse bench db`. A PL/pgSQL function
-- keeps the plans of its statements in the server connection that ran it,
-- whichever client or transaction calls it next; after five custom plans
-- PostgreSQL settles on a generic one and stops planning. The call itself is
-- a one-line statement over no table, cheap to plan.
--
-- Every function here is SECURITY INVOKER (the default): it runs as the
-- runtime role, under the same policies as the statement it replaces, and
-- the community it takes is checked by them like any parameter. Tables are
-- schema-qualified so that no search_path can redirect them. Each statement
-- is the one `crates/store` sent before, unchanged but for parameter names.

-- A profile as the store reads it: the row and its member's wallets.
CREATE TYPE member_profile AS (
    id uuid,
    community_id uuid,
    discord_user_id bigint,
    tier text,
    current_rank integer,
    score bigint,
    role_ids bigint[],
    joined_at timestamptz,
    left_at timestamptz,
    last_event_seq bigint,
    next_check_at timestamptz,
    created_at timestamptz,
    updated_at timestamptz,
    wallets text[]
);

CREATE FUNCTION profile_of_member(p_community uuid, p_user bigint)
RETURNS SETOF member_profile LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT p.id, p.community_id, p.discord_user_id, p.tier, p.current_rank, p.score, p.role_ids,
           p.joined_at, p.left_at, p.last_event_seq, p.next_check_at, p.created_at, p.updated_at,
           (SELECT coalesce(array_agg(w.address ORDER BY w.linked_at, w.address), '{}')
              FROM public.member_wallets w
             WHERE w.community_id = p.community_id AND w.profile_id = p.id)
      FROM public.profiles p
     WHERE p.community_id = p_community AND p.discord_user_id = p_user;
END $$;

-- Creates the profile or refreshes it (clearing left_at on a re-join),
-- keeping the first join time.
CREATE FUNCTION save_member_profile(p_community uuid, p_user bigint, p_roles bigint[],
                                    p_joined timestamptz)
RETURNS SETOF member_profile LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    INSERT INTO public.profiles AS p (community_id, discord_user_id, role_ids, joined_at)
    VALUES (p_community, p_user, p_roles, p_joined)
    ON CONFLICT (community_id, discord_user_id) DO UPDATE
       SET role_ids = excluded.role_ids,
           joined_at = coalesce(p.joined_at, excluded.joined_at),
           left_at = NULL
    RETURNING p.id, p.community_id, p.discord_user_id, p.tier, p.current_rank, p.score, p.role_ids,
              p.joined_at, p.left_at, p.last_event_seq, p.next_check_at, p.created_at, p.updated_at,
              (SELECT coalesce(array_agg(w.address ORDER BY w.linked_at, w.address), '{}')
                 FROM public.member_wallets w
                WHERE w.community_id = p.community_id AND w.profile_id = p.id);
END $$;

-- Two functions rather than one with a flag: a generic plan cannot choose
-- the partial index of enabled rules by a parameter.
CREATE FUNCTION enabled_rules(p_community uuid)
RETURNS SETOF public.eligibility_rules LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM public.eligibility_rules r
     WHERE r.community_id = p_community AND r.enabled
     ORDER BY r.priority DESC, r.created_at;
END $$;

CREATE FUNCTION community_rules(p_community uuid)
RETURNS SETOF public.eligibility_rules LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM public.eligibility_rules r
     WHERE r.community_id = p_community
     ORDER BY r.priority DESC, r.created_at;
END $$;

CREATE FUNCTION append_audit_entry(p_community uuid, p_actor_type text, p_actor_id text,
                                   p_action text, p_target_type text, p_target_id text,
                                   p_metadata jsonb, p_ip inet)
RETURNS SETOF public.audit_logs LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    INSERT INTO public.audit_logs
        (community_id, actor_type, actor_id, action, target_type, target_id, metadata, ip_address)
    VALUES (p_community, p_actor_type, p_actor_id, p_action, p_target_type, p_target_id,
            p_metadata, p_ip)
    RETURNING *;
END $$;

-- Returns the ids of the new rows.
CREATE FUNCTION append_audit_entries(p_community uuid, p_actor_types text[], p_actor_ids text[],
                                     p_actions text[], p_target_types text[], p_target_ids text[],
                                     p_metadata jsonb[])
RETURNS SETOF bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    INSERT INTO public.audit_logs AS a
        (community_id, actor_type, actor_id, action, target_type, target_id, metadata)
    SELECT p_community, *
      FROM unnest(p_actor_types, p_actor_ids, p_actions, p_target_types, p_target_ids, p_metadata)
    RETURNING a.id;
END $$;

-- Records envelope ids as processed; returns those recorded now (an id
-- already there, or listed twice, is returned once at most).
CREATE FUNCTION claim_events(p_community uuid, p_ids text[], p_types text[])
RETURNS SETOF text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    INSERT INTO public.processed_events AS e (community_id, event_id, event_type)
    SELECT p_community, * FROM unnest(p_ids, p_types)
    ON CONFLICT DO NOTHING
    RETURNING e.event_id;
END $$;

-- These members' profiles, read and locked FOR UPDATE in id order.
CREATE FUNCTION lock_member_profiles(p_community uuid, p_users bigint[])
RETURNS TABLE (discord_user_id bigint, role_ids bigint[], last_event_seq bigint)
LANGUAGE plpgsql VOLATILE AS $$
-- The result's columns are variables too: names in the statement are columns.
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT p.discord_user_id, p.role_ids, p.last_event_seq
      FROM public.profiles p
     WHERE p.community_id = p_community AND p.discord_user_id = ANY(p_users)
     ORDER BY p.id
       FOR UPDATE;
END $$;

-- Membership events folded per member, written in one upsert. The WHERE
-- keeps a newer event written by someone else since the read.
CREATE FUNCTION apply_member_events(p_community uuid, p_users bigint[], p_roles text[],
                                    p_joined timestamptz[], p_left timestamptz[],
                                    p_seqs bigint[], p_first_due timestamptz)
RETURNS TABLE (id uuid, discord_user_id bigint) LANGUAGE plpgsql VOLATILE AS $$
-- The result's columns are variables too: names in the statement are columns.
#variable_conflict use_column
BEGIN
    RETURN QUERY
    INSERT INTO public.profiles AS p
        (community_id, discord_user_id, role_ids, joined_at, left_at, last_event_seq,
         next_check_at)
    SELECT p_community, m.user_id, m.roles::bigint[], m.joined_at, m.left_at, m.seq, p_first_due
      FROM unnest(p_users, p_roles, p_joined, p_left, p_seqs)
           AS m(user_id, roles, joined_at, left_at, seq)
    ON CONFLICT (community_id, discord_user_id) DO UPDATE
       SET role_ids = excluded.role_ids,
           joined_at = coalesce(p.joined_at, excluded.joined_at),
           left_at = excluded.left_at,
           last_event_seq = excluded.last_event_seq
     WHERE p.last_event_seq < excluded.last_event_seq
    RETURNING p.id, p.discord_user_id;
END $$;

REVOKE ALL ON FUNCTION
    profile_of_member(uuid, bigint),
    save_member_profile(uuid, bigint, bigint[], timestamptz),
    enabled_rules(uuid),
    community_rules(uuid),
    append_audit_entry(uuid, text, text, text, text, text, jsonb, inet),
    append_audit_entries(uuid, text[], text[], text[], text[], text[], jsonb[]),
    claim_events(uuid, text[], text[]),
    lock_member_profiles(uuid, bigint[]),
    apply_member_events(uuid, bigint[], text[], timestamptz[], timestamptz[], bigint[], timestamptz)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    profile_of_member(uuid, bigint),
    save_member_profile(uuid, bigint, bigint[], timestamptz),
    enabled_rules(uuid),
    community_rules(uuid),
    append_audit_entry(uuid, text, text, text, text, text, jsonb, inet),
    append_audit_entries(uuid, text[], text[], text[], text[], text[], jsonb[]),
    claim_events(uuid, text[], text[]),
    lock_member_profiles(uuid, bigint[]),
    apply_member_events(uuid, bigint[], text[], timestamptz[], timestamptz[], bigint[], timestamptz)
TO gatehouse_app;
