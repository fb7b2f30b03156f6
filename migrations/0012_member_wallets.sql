-- Several wallets per member, linked in the browser with Sign-In with
-- Ethereum (EIP-4361).
--
-- A wallet belongs to at most one member of a community (the primary key);
-- holdings are summed across a member's wallets. The composite foreign key
-- keeps a wallet row from pointing at another community's member whatever
-- the policies say.
CREATE TABLE member_wallets (
    community_id uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    profile_id   uuid        NOT NULL,
    address      text        NOT NULL CHECK (address ~ '^0x[0-9a-f]{40}$'),
    -- How the wallet was proved: 'eoa' (EIP-191 recovery), 'erc1271' (the
    -- contract wallet said yes), 'legacy' (linked before SIWE).
    proof        text        NOT NULL CHECK (proof IN ('eoa', 'erc1271', 'legacy')),
    linked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, address),
    FOREIGN KEY (community_id, profile_id) REFERENCES profiles (community_id, id) ON DELETE CASCADE
);
-- A member's wallets, in the order they were linked.
CREATE INDEX member_wallets_profile_idx ON member_wallets (community_id, profile_id, linked_at);

ALTER TABLE member_wallets ENABLE ROW LEVEL SECURITY;
ALTER TABLE member_wallets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON member_wallets
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
-- Reclaiming a wallet moves it to another member: an UPDATE of profile_id.
GRANT SELECT, INSERT, DELETE ON member_wallets TO gatehouse_app;
GRANT UPDATE (profile_id, proof, linked_at) ON member_wallets TO gatehouse_app;

-- The wallet each role decision was made with becomes the set of them. A
-- decision keeps its grace period only while every wallet it was made with
-- is still the member's: adding a wallet keeps it, removing or moving one
-- ends it (grace rides out a flapping balance, it does not keep what an old
-- wallet earned).
ALTER TABLE role_grants ADD COLUMN wallets text[] NOT NULL DEFAULT '{}'
    CHECK (array_position(wallets, NULL) IS NULL);

ALTER TABLE profiles NO FORCE ROW LEVEL SECURITY;
ALTER TABLE role_grants NO FORCE ROW LEVEL SECURITY;
ALTER TABLE member_wallets NO FORCE ROW LEVEL SECURITY;
INSERT INTO member_wallets (community_id, profile_id, address, proof, linked_at)
SELECT community_id, id, wallet_address, 'legacy', updated_at
  FROM profiles
 WHERE wallet_address IS NOT NULL;
UPDATE role_grants
   SET wallets = ARRAY[wallet_address]
 WHERE wallet_address IS NOT NULL;
ALTER TABLE profiles FORCE ROW LEVEL SECURITY;
ALTER TABLE role_grants FORCE ROW LEVEL SECURITY;
ALTER TABLE member_wallets FORCE ROW LEVEL SECURITY;

ALTER TABLE role_grants DROP COLUMN wallet_address;
ALTER TABLE profiles DROP COLUMN wallet_address;

-- One-time wallet-link pages: /link-wallet answers with a link that holds a
-- random 256-bit token; only its SHA-256 is stored. A token is bound to one
-- community and one member, valid for minutes, and used once.
CREATE TABLE wallet_link_tokens (
    token_hash      bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    community_id    uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    discord_user_id bigint      NOT NULL CHECK (discord_user_id > 0),
    expires_at      timestamptz NOT NULL,
    -- Set when a wallet was linked through the page; the page may still
    -- read the outcome (roles held) until the token expires.
    used_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_link_tokens_expires_idx ON wallet_link_tokens (community_id, expires_at);

ALTER TABLE wallet_link_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE wallet_link_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON wallet_link_tokens
    USING (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid))
    WITH CHECK (community_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::uuid));
GRANT SELECT, INSERT, DELETE ON wallet_link_tokens TO gatehouse_app;
GRANT UPDATE (used_at) ON wallet_link_tokens TO gatehouse_app;

-- Which link is this? The token is what names the community (the page has
-- no other credential), so like authenticate_api_key this is a narrow
-- SECURITY DEFINER function: it answers only for an exact hash, expired or
-- used tokens included (the page says which), and reveals nothing else.
CREATE FUNCTION resolve_wallet_link_token(p_hash bytea)
RETURNS TABLE (community_id uuid, discord_guild_id bigint, discord_user_id bigint,
               expires_at timestamptz, used_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.community_id, c.discord_guild_id, t.discord_user_id, t.expires_at, t.used_at
      FROM public.wallet_link_tokens t
      JOIN public.communities c ON c.id = t.community_id
     WHERE t.token_hash = p_hash AND c.active
$$;
GRANT SELECT ON wallet_link_tokens TO gatehouse_definer;
ALTER FUNCTION resolve_wallet_link_token(bytea) OWNER TO gatehouse_definer;
REVOKE ALL ON FUNCTION resolve_wallet_link_token(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION resolve_wallet_link_token(bytea) TO gatehouse_app;

-- Pending link messages from before SIWE cannot be completed any more.
ALTER TABLE wallet_link_nonces NO FORCE ROW LEVEL SECURITY;
DELETE FROM wallet_link_nonces;
ALTER TABLE wallet_link_nonces FORCE ROW LEVEL SECURITY;
-- A SIWE message names the wallet, so a pending message is per wallet the
-- member is proving, and the message is longer than the old one.
ALTER TABLE wallet_link_nonces ADD COLUMN address text NOT NULL CHECK (address ~ '^0x[0-9a-f]{40}$');
ALTER TABLE wallet_link_nonces DROP CONSTRAINT wallet_link_nonces_message_check;
ALTER TABLE wallet_link_nonces ADD CONSTRAINT wallet_link_nonces_message_check
    CHECK (length(message) BETWEEN 1 AND 2000);
