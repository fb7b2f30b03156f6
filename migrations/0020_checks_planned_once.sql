-- The statements of an eligibility check and of a badge evaluation as
-- PL/pgSQL functions, planned once per server connection (why: migration
-- 0019). After 0019 the membership batches were planned once, and the
-- checks every join triggers became most of what PostgreSQL still planned
-- at every execution: the lease (a locking CTE and the wallets subquery),
-- the decisions' upsert, the release of the leases.
--
-- As in 0019: SECURITY INVOKER (the default), tables schema-qualified, each
-- statement the one `crates/store` sent before, unchanged but for parameter
-- names.
--
-- Not here: the check's read of its members' grants. Its generic plan,
-- built while `role_grants` was empty at the start of `gatehouse bench
-- pipeline`, scanned the community's grants instead of looking the
-- members up by key, and was kept for the rest of the run (3.4 ms a call
-- against 0.07 ms for the statement planned each time, measured with
-- `pg_stat_statements`). A statement over a table that grows from empty in
-- every new deployment is planned with each execution, as before.

-- Takes the check lease on these profiles (by id) for `p_secs` seconds and
-- returns those leased. See `Profiles::lease_for_check`.
CREATE FUNCTION lease_profiles(p_community uuid, p_ids uuid[], p_secs float8)
RETURNS SETOF member_profile LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    WITH free AS (
        SELECT f.id AS free_id, f.left_at AS free_left_at FROM public.profiles f
         WHERE f.community_id = p_community AND f.id = ANY(p_ids)
           AND (f.check_lease_until IS NULL OR f.check_lease_until < now())
         ORDER BY f.id
           FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE public.profiles p SET check_lease_until = now() + make_interval(secs => p_secs)
      FROM free
     WHERE p.community_id = p_community AND p.id = free.free_id AND free.free_left_at IS NULL
    RETURNING p.id, p.community_id, p.discord_user_id, p.tier, p.current_rank, p.score, p.role_ids,
              p.joined_at, p.left_at, p.last_event_seq, p.next_check_at, p.created_at, p.updated_at,
              (SELECT coalesce(array_agg(w.address ORDER BY w.linked_at, w.address), '{}')
                 FROM public.member_wallets w
                WHERE w.community_id = p.community_id AND w.profile_id = p.id);
END $$;

-- `lease_profiles` by Discord user. Two functions rather than one with a
-- flag: a generic plan cannot choose the index by a parameter.
CREATE FUNCTION lease_member_profiles(p_community uuid, p_users bigint[], p_secs float8)
RETURNS SETOF member_profile LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    WITH free AS (
        SELECT f.id AS free_id, f.left_at AS free_left_at FROM public.profiles f
         WHERE f.community_id = p_community AND f.discord_user_id = ANY(p_users)
           AND (f.check_lease_until IS NULL OR f.check_lease_until < now())
         ORDER BY f.id
           FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE public.profiles p SET check_lease_until = now() + make_interval(secs => p_secs)
      FROM free
     WHERE p.community_id = p_community AND p.id = free.free_id AND free.free_left_at IS NULL
    RETURNING p.id, p.community_id, p.discord_user_id, p.tier, p.current_rank, p.score, p.role_ids,
              p.joined_at, p.left_at, p.last_event_seq, p.next_check_at, p.created_at, p.updated_at,
              (SELECT coalesce(array_agg(w.address ORDER BY w.linked_at, w.address), '{}')
                 FROM public.member_wallets w
                WHERE w.community_id = p.community_id AND w.profile_id = p.id);
END $$;

-- The profiles of these members that exist.
CREATE FUNCTION profiles_of_members(p_community uuid, p_users bigint[])
RETURNS SETOF member_profile LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT p.id, p.community_id, p.discord_user_id, p.tier, p.current_rank, p.score, p.role_ids,
           p.joined_at, p.left_at, p.last_event_seq, p.next_check_at, p.created_at, p.updated_at,
           (SELECT coalesce(array_agg(w.address ORDER BY w.linked_at, w.address), '{}')
              FROM public.member_wallets w
             WHERE w.community_id = p.community_id AND w.profile_id = p.id)
      FROM public.profiles p
     WHERE p.community_id = p_community AND p.discord_user_id = ANY(p_users);
END $$;

-- Records decisions (insert or replace), one row per array position. Each
-- row's wallets travel as a JSON array: arrays of arrays do not unnest row
-- by row.
CREATE FUNCTION record_role_grants(p_community uuid, p_profiles uuid[], p_rules uuid[],
                                   p_roles bigint[], p_eligible boolean[],
                                   p_failing_since timestamptz[], p_details text[],
                                   p_checked_at timestamptz[], p_wallets jsonb[])
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO public.role_grants
        (community_id, profile_id, rule_id, role_discord_id, eligible, failing_since, detail,
         checked_at, wallets)
    SELECT p_community, v.profile_id, v.rule_id, v.role, v.eligible, v.failing_since, v.detail,
           v.checked_at, ARRAY(SELECT jsonb_array_elements_text(v.wallets))
      FROM unnest(p_profiles, p_rules, p_roles, p_eligible, p_failing_since, p_details,
                  p_checked_at, p_wallets)
           AS v(profile_id, rule_id, role, eligible, failing_since, detail, checked_at, wallets)
    ON CONFLICT (community_id, profile_id, rule_id) DO UPDATE
       SET role_discord_id = excluded.role_discord_id, eligible = excluded.eligible,
           failing_since = excluded.failing_since, detail = excluded.detail,
           checked_at = excluded.checked_at, wallets = excluded.wallets;
END $$;

-- Replaces these members' role snapshots (`p_roles[i]`: a bigint[] as text).
CREATE FUNCTION set_member_roles(p_community uuid, p_users bigint[], p_roles text[])
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE public.profiles p SET role_ids = v.roles::bigint[]
      FROM unnest(p_users, p_roles) AS v(user_id, roles)
     WHERE p.community_id = p_community AND p.discord_user_id = v.user_id;
END $$;

-- Gives the check leases back and schedules the next checks. See
-- `Profiles::finish_checks`.
CREATE FUNCTION finish_member_checks(p_community uuid, p_leased uuid[], p_ids uuid[],
                                     p_seen timestamptz[], p_at timestamptz[])
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- Rows locked in id order, as everywhere profiles are locked.
    WITH held AS (
        SELECT h.id AS held_id FROM public.profiles h
         WHERE h.community_id = p_community AND h.id = ANY(p_leased)
         ORDER BY h.id
           FOR NO KEY UPDATE
    ), upcoming AS (
        SELECT * FROM unnest(p_ids, p_seen, p_at) AS v(next_id, seen, at)
    )
    UPDATE public.profiles p SET check_lease_until = NULL,
           next_check_at = CASE
               WHEN upcoming.next_id IS NOT NULL
                    AND p.next_check_at IS NOT DISTINCT FROM upcoming.seen
               THEN upcoming.at ELSE p.next_check_at END
      FROM held LEFT JOIN upcoming ON upcoming.next_id = held.held_id
     WHERE p.community_id = p_community AND p.id = held.held_id;
END $$;

-- The community's badges, by slug.
CREATE FUNCTION community_badges(p_community uuid)
RETURNS SETOF public.badges LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM public.badges b WHERE b.community_id = p_community ORDER BY b.slug;
END $$;

REVOKE ALL ON FUNCTION
    lease_profiles(uuid, uuid[], float8),
    lease_member_profiles(uuid, bigint[], float8),
    profiles_of_members(uuid, bigint[]),
    record_role_grants(uuid, uuid[], uuid[], bigint[], boolean[], timestamptz[], text[],
                       timestamptz[], jsonb[]),
    set_member_roles(uuid, bigint[], text[]),
    finish_member_checks(uuid, uuid[], uuid[], timestamptz[], timestamptz[]),
    community_badges(uuid)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    lease_profiles(uuid, uuid[], float8),
    lease_member_profiles(uuid, bigint[], float8),
    profiles_of_members(uuid, bigint[]),
    record_role_grants(uuid, uuid[], uuid[], bigint[], boolean[], timestamptz[], text[],
                       timestamptz[], jsonb[]),
    set_member_roles(uuid, bigint[], text[]),
    finish_member_checks(uuid, uuid[], uuid[], timestamptz[], timestamptz[]),
    community_badges(uuid)
TO gatehouse_app;
