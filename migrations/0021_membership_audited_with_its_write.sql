-- A membership batch's profile upsert and its audit entries in one
-- statement, so that the batch takes two round trips instead of three:
-- the claim of its envelope ids beside the lock of its members, then this
-- with `COMMIT` behind it. Before, the audit insert waited for the upsert's
-- answer only to learn the profile ids its entries point at; here the
-- database joins them itself.
--
-- As in 0019: SECURITY INVOKER (the default), tables schema-qualified; the
-- upsert is 0019's `apply_member_events`, called, and the insert is 0019's
-- `append_audit_entries` with the target id taken from the row written.

-- Writes the folded profiles (see `apply_member_events`) and, for each
-- event of `p_event_users` whose member's row was written, an audit entry
-- targeting that profile, in the events' order. Returns the rows written.
CREATE FUNCTION apply_member_events_audited(
    p_community uuid, p_users bigint[], p_roles text[], p_joined timestamptz[],
    p_left timestamptz[], p_seqs bigint[], p_first_due timestamptz,
    p_event_users bigint[], p_actor_types text[], p_actor_ids text[], p_actions text[],
    p_target_types text[], p_metadata jsonb[])
RETURNS TABLE (id uuid, discord_user_id bigint) LANGUAGE plpgsql VOLATILE AS $$
-- The result's columns are variables too: names in the statement are columns.
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH written AS (
        SELECT w.id, w.discord_user_id
          FROM public.apply_member_events(p_community, p_users, p_roles, p_joined, p_left,
                                          p_seqs, p_first_due) AS w
    ), audited AS (
        INSERT INTO public.audit_logs
            (community_id, actor_type, actor_id, action, target_type, target_id, metadata)
        SELECT p_community, e.actor_type, e.actor_id, e.action, e.target_type, w.id::text,
               e.metadata
          FROM unnest(p_event_users, p_actor_types, p_actor_ids, p_actions, p_target_types,
                      p_metadata) WITH ORDINALITY
               AS e(user_id, actor_type, actor_id, action, target_type, metadata, n)
          JOIN written w ON w.discord_user_id = e.user_id
         ORDER BY e.n
    )
    SELECT w.id, w.discord_user_id FROM written w;
END $$;

REVOKE ALL ON FUNCTION apply_member_events_audited(
    uuid, bigint[], text[], timestamptz[], timestamptz[], bigint[], timestamptz,
    bigint[], text[], text[], text[], text[], jsonb[])
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION apply_member_events_audited(
    uuid, bigint[], text[], timestamptz[], timestamptz[], bigint[], timestamptz,
    bigint[], text[], text[], text[], text[], jsonb[])
TO gatehouse_app;
