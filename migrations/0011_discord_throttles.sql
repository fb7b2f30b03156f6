-- Discord's 429 answers to a community's role changes, counted per minute:
-- what the sync status shows an admin as "rate-limited in the last hour" when
-- roles lag. Written by the workers (one upsert per refused change, which
-- pacing keeps rare) and pruned after a day by their housekeeping.
CREATE TABLE discord_throttles (
    community_id uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    minute       timestamptz NOT NULL,
    count        integer     NOT NULL CHECK (count > 0),
    PRIMARY KEY (community_id, minute)
);

ALTER TABLE discord_throttles ENABLE ROW LEVEL SECURITY;
ALTER TABLE discord_throttles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON discord_throttles
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
GRANT SELECT, INSERT, UPDATE, DELETE ON discord_throttles TO gatehouse_app;
