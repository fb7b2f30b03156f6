-- First sync of a server's members.
--
-- A server that adds the bot with members already in it is synced by
-- asking Discord for its member list (the gateway's Request Guild Members)
-- and ingesting the GUILD_MEMBERS_CHUNKs that answer, one transaction per
-- chunk. A sync is one request: its chunks share the request's nonce and
-- say how many they are. Each chunk is claimed like every event, so it is
-- counted here once however often it is delivered; the chunk that brings
-- `chunks_received` to `chunk_count` completes the sync.
CREATE TABLE member_syncs (
    community_id     uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    nonce            text        NOT NULL CHECK (length(nonce) BETWEEN 1 AND 32),
    chunk_count      integer     NOT NULL CHECK (chunk_count > 0),
    chunks_received  integer     NOT NULL DEFAULT 0 CHECK (chunks_received >= 0),
    members_received bigint      NOT NULL DEFAULT 0 CHECK (members_received >= 0),
    -- The stream position of the sync's earliest chunk. Every member present
    -- when the list was sent is in some chunk (and has a later position),
    -- or has an event of their own after it: a present profile whose last
    -- event is older than this and who was in no chunk has left.
    first_seq        bigint      NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    -- Members found gone when the sync completed.
    members_left     bigint,
    PRIMARY KEY (community_id, nonce)
);
CREATE INDEX member_syncs_started_at_idx ON member_syncs (community_id, started_at DESC);

ALTER TABLE member_syncs ENABLE ROW LEVEL SECURITY;
ALTER TABLE member_syncs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON member_syncs
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
REVOKE ALL ON member_syncs FROM PUBLIC;
GRANT SELECT, INSERT ON member_syncs TO gatehouse_app;
-- Progress only: never which community or sync a row is.
GRANT UPDATE (chunk_count, chunks_received, members_received, first_seq, completed_at, members_left)
    ON member_syncs TO gatehouse_app;

-- When the community's member list was last fully synced; NULL: never.
ALTER TABLE communities ADD COLUMN members_synced_at timestamptz;
GRANT UPDATE (members_synced_at) ON communities TO gatehouse_app;
