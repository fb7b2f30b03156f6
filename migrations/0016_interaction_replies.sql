-- Interaction replies between their commit and Discord taking them.
--
-- A slash command's transaction claims the envelope id, applies the
-- command's effect and stores the reply here, then commits; the reply goes
-- to Discord with no transaction open (a pooled connection held across a
-- Discord call is what lets one community's flood, or a slow Discord,
-- starve every other), and the row is deleted once Discord took the reply
-- or said it already had one. A redelivery that finds its claim and a row
-- here sends that same reply again (Discord's "already acknowledged" counts
-- as answered) instead of running the command a second time; one that
-- finds its claim and no row was answered and does nothing.
--
-- The reply may carry a one-time wallet-link address, so rows live for
-- milliseconds normally; one left behind (the reply failed and no delivery
-- came back within Discord's 3-second window) is useless after that window
-- and is pruned with the processed ids, or sooner by the worker.
-- The interaction's token is never stored: the redelivered envelope has it.
CREATE TABLE interaction_replies (
    community_id    uuid        NOT NULL,
    event_id        text        NOT NULL,
    -- The interaction callback: a message (4) or a deferred message (5).
    kind            text        NOT NULL CHECK (kind IN ('message', 'deferred')),
    content         text        CHECK (length(content) <= 2000),
    -- Members whose roles the command's effect may change, to be re-checked
    -- once the reply is out (again on a redelivery: the requests are
    -- deduplicated by an id derived from the event).
    recheck_self    boolean     NOT NULL DEFAULT false,
    recheck_user_id bigint      CHECK (recheck_user_id > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, event_id),
    CHECK ((kind = 'message') = (content IS NOT NULL)),
    -- A reply exists only with its claim, in the same community; forgetting
    -- the claim forgets the reply.
    FOREIGN KEY (community_id, event_id)
        REFERENCES processed_events (community_id, event_id) ON DELETE CASCADE
);
CREATE INDEX interaction_replies_created_at_idx ON interaction_replies (community_id, created_at);

ALTER TABLE interaction_replies ENABLE ROW LEVEL SECURITY;
ALTER TABLE interaction_replies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON interaction_replies
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
REVOKE ALL ON interaction_replies FROM PUBLIC;
-- Stored, read back, deleted; never changed in place: no UPDATE at all.
GRANT SELECT, INSERT, DELETE ON interaction_replies TO gatehouse_app;
