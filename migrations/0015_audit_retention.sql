-- Audit retention: an operator may keep the audit log for a limited time
-- (the worker's AUDIT_RETENTION; default: keep everything).
--
-- Audit rows are insert-only for the runtime role, in its own tenant. The
-- retention job deletes across every community, so it is a narrow
-- SECURITY DEFINER function: it deletes only rows older than a cut-off
-- that must lie at least a day in the past (a bug or a bad setting cannot
-- empty the log of what just happened), at most `p_limit` rows per call so
-- no single statement holds locks for long, and returns how many it
-- deleted. Webhook deliveries of deleted rows go with them (ON DELETE
-- CASCADE); by then they were delivered or given up long ago.
CREATE INDEX audit_logs_created_idx ON audit_logs (created_at);

CREATE FUNCTION prune_audit_logs(p_before timestamptz, p_limit integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deleted bigint;
BEGIN
    IF p_before > now() - interval '1 day' THEN
        RAISE EXCEPTION 'audit retention must keep at least a day (cut-off % is later than a day ago)', p_before
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_limit < 1 OR p_limit > 100000 THEN
        RAISE EXCEPTION 'prune_audit_logs deletes 1 to 100000 rows per call, not %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH old AS (
        SELECT id FROM public.audit_logs
         WHERE created_at < p_before
         ORDER BY created_at
         LIMIT p_limit
    )
    DELETE FROM public.audit_logs a USING old WHERE a.id = old.id;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;
GRANT SELECT, DELETE ON audit_logs TO gatehouse_definer;
ALTER FUNCTION prune_audit_logs(timestamptz, integer) OWNER TO gatehouse_definer;
REVOKE ALL ON FUNCTION prune_audit_logs(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prune_audit_logs(timestamptz, integer) TO gatehouse_app;
