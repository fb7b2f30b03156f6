-- Webhooks: a community's HTTPS endpoints for what happens in it, fed from
-- the audit log.
--
-- The audit log is the outbox. Every effect a webhook reports (a member
-- joined, a role granted, a rule changed, ...) is written to audit_logs in
-- the same transaction as the effect, so delivery driven from the log loses
-- nothing and reports nothing that was rolled back.
--
-- Reading the log by "id > last id seen" would lose rows: ids are assigned
-- when a row is inserted, not when its transaction commits, so a slow
-- transaction can commit id 10 after a reader has already moved past 11.
-- Each audit row therefore records the id of the transaction that wrote it
-- (tx_id), and a reader only takes rows from transactions older than the
-- oldest one still running (pg_snapshot_xmin of its snapshot): those have
-- all finished, and no row with a smaller tx_id can ever appear again. A
-- webhook's cursor is (tx_id, id) in that order, so it never skips a row
-- and never needs to look back. The price: one long-running writing
-- transaction anywhere in the cluster holds every delivery back until it
-- ends (late, never lost).
--
-- Rows written before this migration keep tx_id NULL and are never
-- delivered (no webhook existed then). Adding the default separately keeps
-- the ALTER from rewriting the table.
ALTER TABLE audit_logs ADD COLUMN tx_id xid8;
ALTER TABLE audit_logs ALTER COLUMN tx_id SET DEFAULT pg_current_xact_id();
CREATE INDEX audit_logs_community_tx_idx ON audit_logs (community_id, tx_id, id);
-- Lets a delivery reference its audit row within its own community only.
ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_community_id_id_key UNIQUE (community_id, id);

CREATE TABLE webhooks (
    id               uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    community_id     uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    url              text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- Event names (`member.joined`, ...); the domain layer owns the list.
    events           text[]      NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 32),
    -- Kept in clear because every delivery is signed with it (HMAC needs
    -- the key itself, a hash would not do). Shown once at registration,
    -- never returned by a read, never logged.
    secret           text        NOT NULL CHECK (length(secret) BETWEEN 32 AND 200),
    description      text        NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    active           boolean     NOT NULL DEFAULT true,
    -- The delivery cursor (see above): audit rows up to (scanned_tx_id,
    -- scanned_audit_id) have been turned into deliveries. It starts at the
    -- registering transaction, so a new webhook hears only what follows.
    scanned_tx_id    xid8        NOT NULL DEFAULT pg_current_xact_id(),
    scanned_audit_id bigint      NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (community_id, id),
    -- One registration per endpoint: a second would deliver everything twice.
    UNIQUE (community_id, url)
);

ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhooks
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks TO gatehouse_app;

-- The delivery log: one row per webhook and audit row, whatever the number
-- of attempts. UNIQUE (webhook_id, audit_id) is what makes dispatching
-- idempotent: a second dispatcher, or a re-run after a crash, inserts nothing.
CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id    uuid        NOT NULL,
    webhook_id      uuid        NOT NULL,
    audit_id        bigint      NOT NULL,
    -- What receivers see as the event's id and the Gatehouse-Delivery
    -- header: stable across retries, so they can drop duplicates, and
    -- random, so it says nothing about other communities' volume.
    public_id       uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    event_type      text        NOT NULL CHECK (length(event_type) BETWEEN 1 AND 100),
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_status     integer     CHECK (last_status BETWEEN 100 AND 599),
    last_error      text        CHECK (length(last_error) <= 1000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Set once JetStream has stored the delivery's message; until then the
    -- dispatcher (re)publishes it.
    published_at    timestamptz,
    last_attempt_at timestamptz,
    finished_at     timestamptz,
    UNIQUE (webhook_id, audit_id),
    FOREIGN KEY (community_id, webhook_id) REFERENCES webhooks (community_id, id) ON DELETE CASCADE,
    FOREIGN KEY (community_id, audit_id) REFERENCES audit_logs (community_id, id) ON DELETE CASCADE
);
-- The log as the API reads it: a webhook's deliveries, newest first.
CREATE INDEX webhook_deliveries_log_idx ON webhook_deliveries (community_id, webhook_id, id DESC);
-- What the dispatcher still has to publish.
CREATE INDEX webhook_deliveries_unpublished_idx ON webhook_deliveries (community_id, id)
    WHERE published_at IS NULL AND state = 'pending';

ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_deliveries
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
-- No DELETE: the log goes only with its webhook (the cascade).
GRANT SELECT, INSERT, UPDATE ON webhook_deliveries TO gatehouse_app;

-- Which active communities have an active webhook, for the dispatcher.
-- Polling every community each second would open thousands of tenant
-- transactions to find the few with webhooks. Reveals ids only, never rows;
-- the definer may read just the two columns it needs.
GRANT SELECT (community_id, active) ON webhooks TO gatehouse_definer;
CREATE FUNCTION webhook_communities() RETURNS TABLE (community_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.id FROM public.communities c
     WHERE c.active
       AND EXISTS (SELECT 1 FROM public.webhooks w WHERE w.community_id = c.id AND w.active)
     ORDER BY c.id;
$$;
ALTER FUNCTION webhook_communities() OWNER TO gatehouse_definer;
REVOKE ALL ON FUNCTION webhook_communities() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhook_communities() TO gatehouse_app;
