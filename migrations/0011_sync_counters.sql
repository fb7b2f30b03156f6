-- What role sync could not do, counted per community, minute and kind: the
-- sync status shows an admin the last hour of it when roles lag.
--   discord_429      a role change Discord refused with 429 (label empty)
--   chain_undecided  a rule outcome left undecided because its chain could
--                    not be read (label: the chain)
-- Written by the workers once per check batch; pruned after a day by their
-- housekeeping.
CREATE TABLE sync_counters (
    community_id uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    minute       timestamptz NOT NULL,
    counter      text        NOT NULL CHECK (counter IN ('discord_429', 'chain_undecided')),
    label        text        NOT NULL DEFAULT '' CHECK (length(label) <= 64),
    count        integer     NOT NULL CHECK (count > 0),
    PRIMARY KEY (community_id, minute, counter, label)
);

ALTER TABLE sync_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_counters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sync_counters
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
GRANT SELECT, INSERT, UPDATE, DELETE ON sync_counters TO gatehouse_app;
