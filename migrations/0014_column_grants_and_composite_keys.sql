-- Column-level grants and composite foreign keys: the database, not only
-- the store's good behaviour, decides which columns the runtime role may
-- change and which rows a row may point at.

-- 1. Column-level UPDATE grants.
--
-- Row-level security decides WHICH rows gatehouse_app may update (its own
-- tenant's); it says nothing about WHICH columns. With a table-wide UPDATE
-- grant the runtime role could rename its community's Discord guild (and so
-- receive another server's events), upgrade its own subscription tier, or
-- rewrite the ids and community_ids that every composite key rests on.
-- Each table below keeps UPDATE on exactly the columns the store's
-- statements set (including the SET lists of INSERT ... ON CONFLICT DO
-- UPDATE, which are checked the same way), and nothing else.
--
-- updated_at is deliberately absent: the BEFORE UPDATE triggers that set it
-- are not checked against column grants (privileges are checked on the
-- statement's target list, not on what a trigger changes in NEW).
-- SELECT ... FOR [NO KEY] UPDATE needs UPDATE on at least one column, which
-- every table that is locked that way keeps.
--
-- REVOKE of a table privilege also revokes the column privileges of that
-- kind, so each table is revoked first and granted its columns after; the
-- pair is safe to re-apply.

-- communities: never id, discord_guild_id (set by provision_community, the
-- definer), name (follows Discord, through the same function),
-- subscription_tier (billing, not the tenant's own call) or created_at.
REVOKE UPDATE ON communities FROM gatehouse_app;
GRANT UPDATE (settings, theme_id, active, announced_at, recheck_pass_at)
    ON communities TO gatehouse_app;

-- profiles: never id, community_id, discord_user_id (who the member is) or
-- created_at.
REVOKE UPDATE ON profiles FROM gatehouse_app;
GRANT UPDATE (role_ids, joined_at, left_at, last_event_seq, score, tier, current_rank,
              next_check_at, check_lease_until)
    ON profiles TO gatehouse_app;

-- eligibility_rules: a rule's definition may change, its identity not.
REVOKE UPDATE ON eligibility_rules FROM gatehouse_app;
GRANT UPDATE (chain, contract_address, rule_type, parameters, role_discord_id, tier_mapping,
              priority, enabled)
    ON eligibility_rules TO gatehouse_app;

-- badges: redefining a badge keeps its slug (the key it is defined by).
REVOKE UPDATE ON badges FROM gatehouse_app;
GRANT UPDATE (name, description, evaluator, criteria) ON badges TO gatehouse_app;

-- badge_awards: awards are inserted (ON CONFLICT DO NOTHING) and deleted,
-- never updated: no UPDATE at all.
REVOKE UPDATE ON badge_awards FROM gatehouse_app;

-- role_grants: a decision is replaced in place; whose and which rule's it is
-- (the key) never changes.
REVOKE UPDATE ON role_grants FROM gatehouse_app;
GRANT UPDATE (role_discord_id, eligible, failing_since, detail, checked_at, wallets)
    ON role_grants TO gatehouse_app;

-- wallet_link_nonces: asking again replaces the pending message of the same
-- member.
REVOKE UPDATE ON wallet_link_nonces FROM gatehouse_app;
GRANT UPDATE (nonce, address, message, expires_at, created_at)
    ON wallet_link_nonces TO gatehouse_app;

-- webhooks: only the delivery cursor moves; the URL and the signing secret
-- are fixed at registration (a changed endpoint is a new registration).
REVOKE UPDATE ON webhooks FROM gatehouse_app;
GRANT UPDATE (scanned_tx_id, scanned_audit_id) ON webhooks TO gatehouse_app;

-- webhook_deliveries: attempts are recorded; which webhook and which audit
-- row a delivery is for never changes.
REVOKE UPDATE ON webhook_deliveries FROM gatehouse_app;
GRANT UPDATE (published_at, attempts, last_status, last_error, last_attempt_at, state,
              finished_at)
    ON webhook_deliveries TO gatehouse_app;

-- sync_counters: only the count of an existing (minute, counter, label).
REVOKE UPDATE ON sync_counters FROM gatehouse_app;
GRANT UPDATE (count) ON sync_counters TO gatehouse_app;

-- api_keys (revoked_at), member_wallets (profile_id, proof, linked_at) and
-- wallet_link_tokens (used_at) were granted by column from the start.

-- 2. Composite foreign keys.
--
-- Foreign-key checks run without row-level security, so a key on a parent's
-- id alone accepts the id of another community's row: a role grant of
-- community A could name community B's rule. Every reference between tenant
-- tables is (community_id, x) -> parent (community_id, id), which makes such
-- a row impossible whatever the policies say. All of them were composite
-- already except role_grants.rule_id (0005).

-- The parent side of the composite key.
ALTER TABLE eligibility_rules
    ADD CONSTRAINT eligibility_rules_community_id_id_key UNIQUE (community_id, id);

-- A grant that already names another community's rule is not a decision
-- about any rule of its own community: drop it, and the next check decides
-- again. (Only a bug could have written one; without this the new key could
-- not be validated.) The owner is subject to FORCE ROW LEVEL SECURITY like
-- everyone else, so the policies are lifted for this statement only, inside
-- this migration's transaction.
ALTER TABLE role_grants NO FORCE ROW LEVEL SECURITY;
ALTER TABLE eligibility_rules NO FORCE ROW LEVEL SECURITY;
DELETE FROM role_grants g
 WHERE NOT EXISTS (SELECT 1 FROM eligibility_rules r
                    WHERE r.community_id = g.community_id AND r.id = g.rule_id);
ALTER TABLE role_grants FORCE ROW LEVEL SECURITY;
ALTER TABLE eligibility_rules FORCE ROW LEVEL SECURITY;

ALTER TABLE role_grants DROP CONSTRAINT IF EXISTS role_grants_rule_id_fkey;
-- Same ON DELETE CASCADE as before: deleting a rule forgets its decisions.
ALTER TABLE role_grants ADD CONSTRAINT role_grants_community_id_rule_id_fkey
    FOREIGN KEY (community_id, rule_id) REFERENCES eligibility_rules (community_id, id)
    ON DELETE CASCADE;
-- The cascade (and the key check of a rule's deletion) looks grants up by
-- rule; the primary key leads with the profile, so it cannot serve that.
CREATE INDEX IF NOT EXISTS role_grants_rule_idx ON role_grants (community_id, rule_id);
