-- Tenant data model. Every row that belongs to a community carries
-- community_id; row-level security (0002) is keyed on it.
--
-- Discord snowflakes are stored as bigint: they fit in 63 bits, index half as
-- wide as text, and compare numerically.

CREATE TABLE communities (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    discord_guild_id  bigint      NOT NULL UNIQUE CHECK (discord_guild_id > 0),
    name              text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    theme_id          text        NOT NULL DEFAULT 'default',
    subscription_tier text        NOT NULL DEFAULT 'free'
                                  CHECK (subscription_tier IN ('free', 'pro', 'enterprise')),
    settings          jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    active            boolean     NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE profiles (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    community_id    uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    discord_user_id bigint      NOT NULL CHECK (discord_user_id > 0),
    -- Normalised by the store before it gets here; the CHECK is the last line.
    wallet_address  text        CHECK (wallet_address ~ '^0x[0-9a-f]{40}$'),
    tier            text        NOT NULL DEFAULT 'member',
    current_rank    integer     CHECK (current_rank > 0),
    score           bigint      NOT NULL DEFAULT 0,
    -- The Discord roles the member held at the last event we saw.
    role_ids        bigint[]    NOT NULL DEFAULT '{}',
    joined_at       timestamptz,
    left_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Composite keys below reference (community_id, id) so that a child row can
    -- never point at a parent in another community, whatever the policies say.
    UNIQUE (community_id, id),
    UNIQUE (community_id, discord_user_id),
    -- NULLs are distinct: many members may have no wallet yet.
    UNIQUE (community_id, wallet_address)
);

CREATE TABLE eligibility_rules (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    community_id     uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    chain            text        CHECK (chain ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    contract_address text        CHECK (contract_address ~ '^0x[0-9a-f]{40}$'),
    rule_type        text        NOT NULL
                                 CHECK (rule_type IN ('token_balance', 'nft_ownership', 'score_threshold', 'custom')),
    parameters       jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(parameters) = 'object'),
    role_discord_id  bigint      NOT NULL CHECK (role_discord_id > 0),
    tier_mapping     text,
    priority         integer     NOT NULL DEFAULT 0,
    enabled          boolean     NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (community_id, role_discord_id),
    -- On-chain rules need to know where to look.
    CHECK (rule_type NOT IN ('token_balance', 'nft_ownership')
           OR (chain IS NOT NULL AND contract_address IS NOT NULL))
);

CREATE TABLE badges (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    community_id uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    slug         text        NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description  text        NOT NULL DEFAULT '',
    evaluator    text        NOT NULL
                             CHECK (evaluator IN ('join_order', 'tenure', 'tier_reached', 'manual_grant')),
    criteria     jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(criteria) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (community_id, id),
    UNIQUE (community_id, slug)
);

CREATE TABLE badge_awards (
    community_id uuid        NOT NULL,
    badge_id     uuid        NOT NULL,
    profile_id   uuid        NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    awarded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community_id, badge_id, profile_id),
    FOREIGN KEY (community_id, badge_id) REFERENCES badges (community_id, id) ON DELETE CASCADE,
    FOREIGN KEY (community_id, profile_id) REFERENCES profiles (community_id, id) ON DELETE CASCADE
);

CREATE TABLE audit_logs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    actor_type   text        NOT NULL CHECK (actor_type IN ('user', 'system', 'admin')),
    actor_id     text,
    action       text        NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    target_type  text,
    target_id    text,
    metadata     jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    ip_address   inet,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Access paths. The UNIQUE constraints above already index
-- communities(discord_guild_id), profiles(community_id, discord_user_id) and
-- profiles(community_id, wallet_address).
CREATE INDEX eligibility_rules_enabled_idx
    ON eligibility_rules (community_id, priority DESC) WHERE enabled;
CREATE INDEX badge_awards_profile_idx ON badge_awards (community_id, profile_id);
CREATE INDEX audit_logs_community_created_idx ON audit_logs (community_id, created_at DESC);

CREATE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER communities_touch BEFORE UPDATE ON communities
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER profiles_touch BEFORE UPDATE ON profiles
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER eligibility_rules_touch BEFORE UPDATE ON eligibility_rules
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER badges_touch BEFORE UPDATE ON badges
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
