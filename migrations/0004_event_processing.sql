-- What the workers need to apply Discord events exactly once and in order.

-- Idempotency: the envelope id of every event whose effect was committed,
-- written in the same tenant transaction as the effect. A redelivered or
-- re-published event finds its id here and changes nothing.
CREATE TABLE processed_events (
    community_id uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    event_id     text        NOT NULL CHECK (length(event_id) BETWEEN 1 AND 100),
    event_type   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, event_id)
);
-- For pruning old ids (they only need to outlive the redelivery window).
CREATE INDEX processed_events_processed_at_idx ON processed_events (community_id, processed_at);

ALTER TABLE processed_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE processed_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON processed_events
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
GRANT SELECT, INSERT, DELETE ON processed_events TO gatehouse_app;

-- Ordering: several workers process a stream concurrently, so a member's
-- leave may be handled before the join that preceded it. Each profile keeps
-- the stream sequence of the last membership event applied to it, and older
-- events are skipped (last writer by stream order wins).
ALTER TABLE profiles ADD COLUMN last_event_seq bigint NOT NULL DEFAULT 0;
