//! The simulated Discord's data: guilds, roles, members, interactions.
//!
//! Every change returns the dispatches Discord would send for it, so that the
//! REST API, the control API and generated traffic all produce gateway events
//! the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wire::{
    ApplicationId, ChannelId, CommandId, GuildId, InteractionId, MessageId, RoleId, UserId,
};

use crate::config::intents;
use crate::discord_json;
use crate::ids::IdGenerator;
use crate::SimError;

/// One gateway event to deliver to the sessions whose shard owns `guild_id`.
#[derive(Clone, Debug)]
pub(crate) struct Dispatch {
    pub guild_id: GuildId,
    pub event: &'static str,
    pub data: Arc<str>,
    /// The intent a session needs to receive it; 0 for always.
    pub intent: u64,
}

impl Dispatch {
    fn new(guild_id: GuildId, event: &'static str, data: &Value, intent: u64) -> Self {
        Self {
            guild_id,
            event,
            data: data.to_string().into(),
            intent,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RoleState {
    pub id: RoleId,
    pub name: String,
    pub position: i64,
    pub permissions: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct MemberState {
    pub user_id: UserId,
    pub username: String,
    pub global_name: Option<String>,
    pub bot: bool,
    pub nick: Option<String>,
    pub roles: BTreeSet<RoleId>,
    pub pending: bool,
    pub joined_at_ms: i64,
    /// Set through the control API: the guild-level permissions OAuth2
    /// reports for this member, instead of those its roles grant.
    pub permissions: Option<u64>,
}

#[derive(Clone, Debug)]
pub(crate) struct GuildState {
    pub id: GuildId,
    pub name: String,
    pub owner_id: UserId,
    pub channel_id: ChannelId,
    pub locale: String,
    pub roles: Vec<RoleState>,
    pub members: BTreeMap<UserId, MemberState>,
    /// False during a simulated outage.
    pub available: bool,
    /// False once the bot was removed.
    pub bot_present: bool,
    pub joined_at_ms: i64,
}

/// One answer the application gave to an interaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InteractionResponse {
    /// `callback` for POST …/callback, `edit_original` for PATCH …/@original.
    pub action: String,
    /// The callback type (4 = message, 5 = deferred message, …); null for edits.
    pub callback_type: Option<u64>,
    pub body: Value,
    pub at_ms: i64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct InteractionRecord {
    pub id: InteractionId,
    pub token: String,
    pub guild_id: GuildId,
    pub user_id: UserId,
    pub command_id: CommandId,
    pub command_name: String,
    pub options: Value,
    pub locale: String,
    pub created_at_ms: i64,
    pub message_id: MessageId,
    pub responses: Vec<InteractionResponse>,
}

/// A guild as the control API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuildInfo {
    pub id: GuildId,
    pub name: String,
    pub owner_id: UserId,
    pub channel_id: ChannelId,
    pub role_ids: Vec<RoleId>,
    pub member_count: usize,
    pub available: bool,
    pub bot_present: bool,
}

/// A member as the control API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub guild_id: GuildId,
    pub user_id: UserId,
    pub username: String,
    pub nick: Option<String>,
    pub roles: Vec<RoleId>,
    pub pending: bool,
}

/// An interaction and what the application answered, for the control API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InteractionInfo {
    pub id: InteractionId,
    pub token: String,
    pub guild_id: GuildId,
    pub user_id: UserId,
    pub command_name: String,
    pub responses: Vec<InteractionResponse>,
}

/// A new member; unset fields get generated values.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewMember {
    pub user_id: Option<UserId>,
    pub username: Option<String>,
    pub nick: Option<String>,
    pub roles: Vec<RoleId>,
    pub pending: bool,
    pub bot: bool,
}

/// Changes to a member; unset fields stay as they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemberPatch {
    /// `Some(None)` clears the nickname.
    pub nick: Option<Option<String>>,
    pub roles: Option<Vec<RoleId>>,
    pub pending: Option<bool>,
}

/// A slash command invocation to simulate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInteraction {
    pub guild_id: GuildId,
    pub user_id: UserId,
    #[serde(default)]
    pub command_name: String,
    /// Discord's option objects (`{"name","type","value"}` or nested `options`).
    #[serde(default)]
    pub options: Vec<Value>,
    #[serde(default)]
    pub locale: Option<String>,
}

/// What `create_interaction` hands back: what a test needs to follow it up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedInteraction {
    pub id: InteractionId,
    pub token: String,
}

#[derive(Debug, Default)]
pub(crate) struct World {
    pub ids: IdGenerator,
    pub guilds: BTreeMap<GuildId, GuildState>,
    pub interactions: HashMap<InteractionId, InteractionRecord>,
    pub interaction_by_token: HashMap<String, InteractionId>,
    /// The application's global commands, as last overwritten through REST.
    pub application_commands: Vec<serde_json::Value>,
    user_counter: u64,
}

pub(crate) type Changed<T> = Result<(T, Vec<Dispatch>), SimError>;

/// Permissions of @everyone in a new guild (view channels, send messages, …).
const EVERYONE_PERMISSIONS: u64 = 0x0000_0000_0006_4c40;

impl World {
    fn guild_mut(&mut self, guild_id: GuildId) -> Result<&mut GuildState, SimError> {
        self.guilds
            .get_mut(&guild_id)
            .ok_or(SimError::UnknownGuild(guild_id))
    }

    pub(crate) fn guild(&self, guild_id: GuildId) -> Result<&GuildState, SimError> {
        self.guilds
            .get(&guild_id)
            .ok_or(SimError::UnknownGuild(guild_id))
    }

    fn new_member(&mut self, spec: NewMember, now_ms: i64) -> MemberState {
        self.user_counter += 1;
        let user_id = spec.user_id.unwrap_or_else(|| self.ids.next());
        MemberState {
            user_id,
            username: spec
                .username
                .unwrap_or_else(|| format!("member{}", self.user_counter)),
            global_name: None,
            bot: spec.bot,
            nick: spec.nick,
            roles: spec.roles.into_iter().collect(),
            pending: spec.pending,
            joined_at_ms: now_ms,
            permissions: None,
        }
    }

    /// Creates a guild the bot is in, with `members` generated members and
    /// `extra_roles` roles besides @everyone. `announce` builds the
    /// GUILD_CREATE dispatch; bulk setup before any shard connected skips it,
    /// since nobody would receive it.
    pub(crate) fn create_guild(
        &mut self,
        name: Option<String>,
        members: usize,
        extra_roles: usize,
        large_threshold: u32,
        now_ms: i64,
        announce: bool,
    ) -> Changed<GuildId> {
        let id: GuildId = self.ids.next();
        let channel_id = self.ids.next();
        // Discord gives a guild's @everyone role the guild's own id.
        let mut roles = vec![RoleState {
            id: id.cast(),
            name: "@everyone".into(),
            position: 0,
            permissions: EVERYONE_PERMISSIONS,
        }];
        for i in 0..extra_roles {
            roles.push(RoleState {
                id: self.ids.next(),
                name: format!("role-{}", i + 1),
                position: i as i64 + 1,
                permissions: 0,
            });
        }
        let mut member_map = BTreeMap::new();
        for _ in 0..members {
            let member = self.new_member(NewMember::default(), now_ms);
            member_map.insert(member.user_id, member);
        }
        let owner_id = member_map
            .keys()
            .next()
            .copied()
            .unwrap_or_else(|| self.ids.next());
        let guild = GuildState {
            id,
            name: name.unwrap_or_else(|| format!("guild-{}", self.guilds.len() + 1)),
            owner_id,
            channel_id,
            locale: "en-US".into(),
            roles,
            members: member_map,
            available: true,
            bot_present: true,
            joined_at_ms: now_ms,
        };
        let dispatches = if announce {
            let data = discord_json::guild_create(&guild, large_threshold, now_ms);
            vec![Dispatch::new(id, "GUILD_CREATE", &data, intents::GUILDS)]
        } else {
            Vec::new()
        };
        self.guilds.insert(id, guild);
        Ok((id, dispatches))
    }

    /// The bot leaves (`unavailable == false`) or the guild has an outage.
    pub(crate) fn remove_guild(&mut self, guild_id: GuildId, unavailable: bool) -> Changed<()> {
        let guild = self.guild_mut(guild_id)?;
        if unavailable {
            guild.available = false;
        } else {
            guild.bot_present = false;
        }
        let data = discord_json::guild_delete(guild_id, unavailable);
        Ok((
            (),
            vec![Dispatch::new(
                guild_id,
                "GUILD_DELETE",
                &data,
                intents::GUILDS,
            )],
        ))
    }

    /// Ends an outage, or adds the bot back.
    pub(crate) fn restore_guild(
        &mut self,
        guild_id: GuildId,
        large_threshold: u32,
        now_ms: i64,
    ) -> Changed<()> {
        let guild = self.guild_mut(guild_id)?;
        guild.available = true;
        if !guild.bot_present {
            guild.bot_present = true;
            guild.joined_at_ms = now_ms;
        }
        let data = discord_json::guild_create(guild, large_threshold, guild.joined_at_ms);
        Ok((
            (),
            vec![Dispatch::new(
                guild_id,
                "GUILD_CREATE",
                &data,
                intents::GUILDS,
            )],
        ))
    }

    pub(crate) fn add_member(
        &mut self,
        guild_id: GuildId,
        spec: NewMember,
        now_ms: i64,
    ) -> Changed<UserId> {
        self.guild(guild_id)?;
        let member = self.new_member(spec, now_ms);
        let user_id = member.user_id;
        let data = discord_json::member_add(guild_id, &member);
        self.guild_mut(guild_id)?.members.insert(user_id, member);
        Ok((
            user_id,
            vec![Dispatch::new(
                guild_id,
                "GUILD_MEMBER_ADD",
                &data,
                intents::GUILD_MEMBERS,
            )],
        ))
    }

    pub(crate) fn remove_member(&mut self, guild_id: GuildId, user_id: UserId) -> Changed<()> {
        let member = self
            .guild_mut(guild_id)?
            .members
            .remove(&user_id)
            .ok_or(SimError::UnknownMember { guild_id, user_id })?;
        let data = discord_json::member_remove(guild_id, &member);
        Ok((
            (),
            vec![Dispatch::new(
                guild_id,
                "GUILD_MEMBER_REMOVE",
                &data,
                intents::GUILD_MEMBERS,
            )],
        ))
    }

    pub(crate) fn update_member(
        &mut self,
        guild_id: GuildId,
        user_id: UserId,
        patch: MemberPatch,
    ) -> Changed<MemberInfo> {
        let guild = self.guild_mut(guild_id)?;
        if let Some(roles) = &patch.roles {
            if let Some(missing) = roles
                .iter()
                .find(|r| !guild.roles.iter().any(|g| g.id == **r))
            {
                return Err(SimError::UnknownRole {
                    guild_id,
                    role_id: *missing,
                });
            }
        }
        let member = guild
            .members
            .get_mut(&user_id)
            .ok_or(SimError::UnknownMember { guild_id, user_id })?;
        if let Some(nick) = patch.nick {
            member.nick = nick;
        }
        if let Some(roles) = patch.roles {
            member.roles = roles.into_iter().collect();
        }
        if let Some(pending) = patch.pending {
            member.pending = pending;
        }
        let data = discord_json::member_update(guild_id, member);
        let info = member_info(guild_id, member);
        Ok((
            info,
            vec![Dispatch::new(
                guild_id,
                "GUILD_MEMBER_UPDATE",
                &data,
                intents::GUILD_MEMBERS,
            )],
        ))
    }

    /// Adds (`add == true`) or removes a role, as the REST API does. A change
    /// that changes nothing sends no event, like Discord.
    pub(crate) fn set_member_role(
        &mut self,
        guild_id: GuildId,
        user_id: UserId,
        role_id: RoleId,
        add: bool,
    ) -> Changed<()> {
        let guild = self.guild_mut(guild_id)?;
        if !guild.roles.iter().any(|r| r.id == role_id) || role_id == guild_id.cast() {
            return Err(SimError::UnknownRole { guild_id, role_id });
        }
        let member = guild
            .members
            .get_mut(&user_id)
            .ok_or(SimError::UnknownMember { guild_id, user_id })?;
        let changed = if add {
            member.roles.insert(role_id)
        } else {
            member.roles.remove(&role_id)
        };
        if !changed {
            return Ok(((), Vec::new()));
        }
        let data = discord_json::member_update(guild_id, member);
        Ok((
            (),
            vec![Dispatch::new(
                guild_id,
                "GUILD_MEMBER_UPDATE",
                &data,
                intents::GUILD_MEMBERS,
            )],
        ))
    }

    pub(crate) fn create_interaction(
        &mut self,
        spec: NewInteraction,
        application_id: ApplicationId,
        now_ms: i64,
    ) -> Changed<CreatedInteraction> {
        let guild = self.guild(spec.guild_id)?;
        let member = guild
            .members
            .get(&spec.user_id)
            .ok_or(SimError::UnknownMember {
                guild_id: spec.guild_id,
                user_id: spec.user_id,
            })?
            .clone();
        let id = self.ids.next();
        let record = InteractionRecord {
            id,
            token: format!(
                "sim-interaction-{:x}-{:016x}",
                id.get(),
                rand::random::<u64>()
            ),
            guild_id: spec.guild_id,
            user_id: spec.user_id,
            command_id: self.ids.next(),
            command_name: spec.command_name,
            options: Value::Array(spec.options),
            locale: spec.locale.unwrap_or_else(|| "en-US".into()),
            created_at_ms: now_ms,
            message_id: self.ids.next(),
            responses: Vec::new(),
        };
        let guild = self.guild(spec.guild_id)?;
        let data = discord_json::interaction(&record, guild, &member, application_id);
        let created = CreatedInteraction {
            id,
            token: record.token.clone(),
        };
        self.interaction_by_token.insert(record.token.clone(), id);
        self.interactions.insert(id, record);
        Ok((
            created,
            vec![Dispatch::new(spec.guild_id, "INTERACTION_CREATE", &data, 0)],
        ))
    }

    pub(crate) fn guild_info(&self, guild: &GuildState) -> GuildInfo {
        GuildInfo {
            id: guild.id,
            name: guild.name.clone(),
            owner_id: guild.owner_id,
            channel_id: guild.channel_id,
            role_ids: guild.roles.iter().map(|r| r.id).collect(),
            member_count: guild.members.len(),
            available: guild.available,
            bot_present: guild.bot_present,
        }
    }

    pub(crate) fn interaction_info(&self, id: InteractionId) -> Option<InteractionInfo> {
        self.interactions.get(&id).map(|r| InteractionInfo {
            id: r.id,
            token: r.token.clone(),
            guild_id: r.guild_id,
            user_id: r.user_id,
            command_name: r.command_name.clone(),
            responses: r.responses.clone(),
        })
    }

    /// Sets the permissions OAuth2 reports for a member. No gateway event:
    /// on Discord the change would come from roles, which this bypasses.
    pub(crate) fn set_member_permissions(
        &mut self,
        guild_id: GuildId,
        user_id: UserId,
        permissions: u64,
    ) -> Changed<()> {
        let member = self
            .guild_mut(guild_id)?
            .members
            .get_mut(&user_id)
            .ok_or(SimError::UnknownMember { guild_id, user_id })?;
        member.permissions = Some(permissions);
        Ok(((), Vec::new()))
    }

    /// The guilds `user_id` is a member of, in id order, whether or not the
    /// bot is there.
    pub(crate) fn guilds_of_user(&self, user_id: UserId) -> Vec<(&GuildState, &MemberState)> {
        self.guilds
            .values()
            .filter_map(|g| g.members.get(&user_id).map(|m| (g, m)))
            .collect()
    }

    /// The member of any guild with this id, for its name.
    pub(crate) fn any_member(&self, user_id: UserId) -> Option<&MemberState> {
        self.guilds.values().find_map(|g| g.members.get(&user_id))
    }

    /// Guilds a shard serves, in id order.
    pub(crate) fn guilds_of_shard(&self, shard_id: u32, shard_count: u32) -> Vec<&GuildState> {
        self.guilds
            .values()
            .filter(|g| g.bot_present && crate::ids::shard_for_guild(g.id, shard_count) == shard_id)
            .collect()
    }
}

/// A member's guild-level permissions as OAuth2's guild list reports them:
/// the control API's override if set, every permission for the owner,
/// otherwise the union of @everyone's and the member's roles' permissions.
/// Administrator is reported as its own bit, not expanded to every bit.
pub(crate) fn member_permissions(guild: &GuildState, member: &MemberState) -> u64 {
    if let Some(permissions) = member.permissions {
        return permissions;
    }
    if guild.owner_id == member.user_id {
        return crate::oauth::permissions::ALL;
    }
    let everyone: RoleId = guild.id.cast();
    guild
        .roles
        .iter()
        .filter(|r| r.id == everyone || member.roles.contains(&r.id))
        .fold(0, |bits, r| bits | r.permissions)
}

pub(crate) fn member_info(guild_id: GuildId, member: &MemberState) -> MemberInfo {
    MemberInfo {
        guild_id,
        user_id: member.user_id,
        username: member.username.clone(),
        nick: member.nick.clone(),
        roles: member.roles.iter().copied().collect(),
        pending: member.pending,
    }
}
