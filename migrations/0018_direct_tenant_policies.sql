-- Tenant policies compare the column with the setting directly.
--
-- 0002 wrapped the tenant in a sub-select so that PostgreSQL would evaluate
-- it once per statement (an InitPlan). current_setting() is STABLE, so the
-- planner evaluates it once per index scan anyway and uses the same indexes;
-- the sub-select only added a plan node to every statement, which `gatehouse
-- bench db` measured at about half of what row-level security costs a
-- tenant transaction. The predicate is otherwise the same and still fails
-- closed: an unset or reset setting becomes NULL, and `x = NULL` is never
-- true.

ALTER POLICY tenant_isolation ON communities
    USING (id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON profiles
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON eligibility_rules
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON badges
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON badge_awards
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON processed_events
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON role_grants
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON wallet_link_nonces
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON api_keys
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON webhooks
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON webhook_deliveries
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON sync_counters
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON member_wallets
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON wallet_link_tokens
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON interaction_replies
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_isolation ON member_syncs
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);

ALTER POLICY tenant_read ON audit_logs
    USING (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);
ALTER POLICY tenant_append ON audit_logs
    WITH CHECK (community_id = nullif(current_setting('app.current_tenant', true), '')::uuid);
