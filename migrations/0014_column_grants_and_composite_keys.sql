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
