-- Wallet linking by signature (/link-wallet): the server issues a nonce
-- message per (community, member); the member signs it with the wallet
-- (EIP-191 personal_sign) and the worker verifies the signature against
-- exactly this stored message before linking. One pending nonce per member:
-- asking again replaces it. A nonce is deleted when it is used.
CREATE TABLE wallet_link_nonces (
    community_id    uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    discord_user_id bigint      NOT NULL CHECK (discord_user_id > 0),
    nonce           text        NOT NULL CHECK (nonce ~ '^[0-9a-f]{32}$'),
    -- The exact text to sign; verification recovers the signer from it.
    message         text        NOT NULL CHECK (length(message) BETWEEN 1 AND 1000),
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, discord_user_id)
);
-- For pruning expired nonces.
CREATE INDEX wallet_link_nonces_expires_idx ON wallet_link_nonces (community_id, expires_at);

ALTER TABLE wallet_link_nonces ENABLE ROW LEVEL SECURITY;
ALTER TABLE wallet_link_nonces FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON wallet_link_nonces
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
GRANT SELECT, INSERT, UPDATE, DELETE ON wallet_link_nonces TO gatehouse_app;

-- Badges: join_order ranks members by join time; without this index each
-- evaluation would sort the community's profiles.
CREATE INDEX profiles_join_order_idx ON profiles (community_id, joined_at, discord_user_id)
    WHERE joined_at IS NOT NULL;
