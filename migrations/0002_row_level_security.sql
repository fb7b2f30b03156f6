-- Tenant isolation. The runtime role (gatehouse_app) reaches tenant rows only
-- through these policies; the tenant is the transaction-local setting
-- app.current_tenant, set by the store's tenant transaction.
--
-- The predicate is written so that
--  * the column is compared uncast, letting the planner use the indexes
--    (the sub-select is evaluated once per statement as an InitPlan);
--  * it fails closed: unset (NULL) and reset-after-transaction ('') both
--    become NULL, and `community_id = NULL` is never true;
--  * nothing else is consulted: no role check, no "admin" setting that a
--    session could set_config itself into.

-- Nobody but the owner creates objects here; the runtime role only uses them.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO gatehouse_app;
-- The definer role must be able to own functions in this schema.
GRANT USAGE, CREATE ON SCHEMA public TO gatehouse_definer;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;

ALTER TABLE communities ENABLE ROW LEVEL SECURITY;
ALTER TABLE communities FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON communities
    USING (id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));

ALTER TABLE profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE profiles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON profiles
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));

ALTER TABLE eligibility_rules ENABLE ROW LEVEL SECURITY;
ALTER TABLE eligibility_rules FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON eligibility_rules
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));

ALTER TABLE badges ENABLE ROW LEVEL SECURITY;
ALTER TABLE badges FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON badges
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));

ALTER TABLE badge_awards ENABLE ROW LEVEL SECURITY;
ALTER TABLE badge_awards FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON badge_awards
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));

-- Audit rows: readable and insertable within the tenant; there is no UPDATE or
-- DELETE policy (and no such grant), so the log is append-only for the app.
ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_logs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON audit_logs FOR SELECT
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
CREATE POLICY tenant_append ON audit_logs FOR INSERT
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));

-- Runtime grants. Communities are created and looked up across tenants only
-- through the SECURITY DEFINER functions of 0003; within its tenant the app
-- may read and update its own community row.
GRANT SELECT, UPDATE ON communities TO gatehouse_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON profiles, eligibility_rules, badges, badge_awards
    TO gatehouse_app;
GRANT SELECT, INSERT ON audit_logs TO gatehouse_app;
