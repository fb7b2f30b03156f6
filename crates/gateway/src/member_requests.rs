//! Asking Discord for a guild's member list (Request Guild Members, opcode 8).
//!
//! Discord tells a bot about a member only when something happens to them:
//! a server that adds the bot with 50,000 members in it would otherwise be
//! known one join at a time, and roles held without qualifying would never
//! be reconciled. So every available GUILD_CREATE — the bot was added, a
//! fresh session lists its guilds, an outage ended — asks for the whole
//! list. Those are exactly the moments events may have been missed (a RESUME
//! replays the gap and sends no GUILD_CREATE, so a resumed session asks for
//! nothing). Discord answers with GUILD_MEMBERS_CHUNKs of up to 1,000
//! members, published like any dispatch (`member.chunk`); the worker
//! ingests each in one transaction and reconciles roles once the last is in.
//!
//! Pacing is Twilight's: commands go through the shard's own rate limiter
//! (Discord's 120 sends per minute per connection, heartbeats reserved), so
//! a shard with 1,000 guilds asks for all of them in about nine minutes
//! without risking its connection. Asking for all members of one guild again
//! within Discord's window is refused with a RATE_LIMITED dispatch; the
//! request is made again once `retry_after` has passed.

use std::time::Duration;

use serde::Deserialize;
use twilight_gateway::MessageSender;
use twilight_model::gateway::payload::outgoing::RequestGuildMembers;
use twilight_model::id::{marker::GuildMarker, Id};

use crate::metrics as m;

/// How often one request is made again after Discord refused it as rate
/// limited, before the gateway gives up until the guild's next
/// GUILD_CREATE.
const MAX_RETRIES: u32 = 3;

/// Asks for every member of `guild`. `nonce` (at most 32 bytes, echoed in
/// every chunk) names this request: the worker counts chunks per nonce.
pub fn request_all(sender: &MessageSender, shard_id: u32, guild: Id<GuildMarker>, nonce: &str) {
    let request = RequestGuildMembers::builder(guild)
        .nonce(nonce)
        .query("", None);
    match sender.command(&request) {
        Ok(()) => {
            metrics::counter!(m::MEMBER_REQUESTS, "shard" => shard_id.to_string()).increment(1);
            tracing::debug!(shard = shard_id, %guild, nonce, "requested the guild's members");
        }
        // The shard is gone (shutting down); its successor asks again at
        // its own GUILD_CREATE.
        Err(e) => {
            tracing::debug!(shard = shard_id, %guild, error = %e, "could not request the guild's members");
        }
    }
}

/// The nonce for the request a GUILD_CREATE causes: the dispatch's
/// envelope id without its hyphens (32 hex digits), so the same dispatch
/// replayed asks under the same name.
pub fn nonce_for(envelope_id: &str) -> String {
    envelope_id.chars().filter(|c| *c != '-').take(32).collect()
}

/// A RATE_LIMITED dispatch, read from the raw message. Twilight 0.18
/// models its `meta` as an externally tagged enum, which Discord's
/// `{"guild_id", "nonce"}` does not match, so the gateway reads it itself.
#[derive(Debug, Deserialize)]
struct RateLimitedFrame {
    t: Option<String>,
    d: Option<RateLimited>,
}

#[derive(Debug, Deserialize)]
struct RateLimited {
    opcode: u8,
    retry_after: f64,
    meta: RateLimitMeta,
}

#[derive(Debug, Deserialize)]
struct RateLimitMeta {
    guild_id: Id<GuildMarker>,
    #[serde(default)]
    nonce: Option<String>,
}

/// A refused member request to make again: which guild, under which nonce,
/// after how long.
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub guild: Id<GuildMarker>,
    pub nonce: Option<String>,
    pub retry_after: Duration,
}

/// `Some` if `text` is a RATE_LIMITED dispatch for a member request.
pub fn refused(text: &str) -> Option<Refused> {
    // Cheap test first: this runs for every message Twilight did not parse.
    if !text.contains("RATE_LIMITED") {
        return None;
    }
    let frame: RateLimitedFrame = serde_json::from_str(text).ok()?;
    let limited = frame
        .d
        .filter(|_| frame.t.as_deref() == Some("RATE_LIMITED"))?;
    // Opcode 8 is Request Guild Members, the only command Discord limits so.
    (limited.opcode == 8).then(|| Refused {
        guild: limited.meta.guild_id,
        nonce: limited.meta.nonce,
        retry_after: Duration::from_secs_f64(limited.retry_after.clamp(0.0, 3600.0)),
    })
}

/// Makes a refused request again after its `retry_after` (plus a margin),
/// at most [`MAX_RETRIES`] times per nonce; the attempt is counted in the
/// nonce's suffix so that each retry is recognisable in the log.
pub fn retry_later(sender: MessageSender, shard_id: u32, refused: Refused) {
    let nonce = refused.nonce.unwrap_or_default();
    let (base, attempt) = match nonce.rsplit_once('~') {
        Some((base, n)) => (base.to_owned(), n.parse::<u32>().unwrap_or(MAX_RETRIES)),
        None => (nonce.chars().take(30).collect::<String>(), 0),
    };
    if attempt >= MAX_RETRIES {
        metrics::counter!(m::MEMBER_REQUESTS_ABANDONED, "shard" => shard_id.to_string())
            .increment(1);
        tracing::warn!(shard = shard_id, guild = %refused.guild, "member request refused as rate limited too often; the guild is synced at its next GUILD_CREATE");
        return;
    }
    let next = format!("{base}~{}", attempt + 1);
    tracing::info!(shard = shard_id, guild = %refused.guild, retry_after_ms = refused.retry_after.as_millis() as u64, "member request rate limited; asking again later");
    tokio::spawn(async move {
        tokio::time::sleep(refused.retry_after + Duration::from_millis(250)).await;
        request_all(&sender, shard_id, refused.guild, &next);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_the_envelope_id_in_32_hex_digits() {
        let nonce = nonce_for("6d309cdf-dcb5-5dfd-8938-62d3ea33c557");
        assert_eq!(nonce, "6d309cdfdcb55dfd893862d3ea33c557");
        assert_eq!(nonce.len(), 32);
    }

    #[test]
    fn discords_rate_limited_dispatch_is_read_with_its_guild_and_nonce() {
        let text = r#"{"op":0,"s":42,"t":"RATE_LIMITED","d":{"opcode":8,"retry_after":27.5,"meta":{"guild_id":"81384788765712384","nonce":"abc"}}}"#;
        assert_eq!(
            refused(text),
            Some(Refused {
                guild: Id::new(81384788765712384),
                nonce: Some("abc".into()),
                retry_after: Duration::from_millis(27_500),
            })
        );
        assert_eq!(refused(r#"{"op":0,"t":"MESSAGE_CREATE","d":{}}"#), None);
        // Another opcode, or a malformed frame: not a member request.
        assert_eq!(
            refused(
                r#"{"t":"RATE_LIMITED","d":{"opcode":3,"retry_after":1,"meta":{"guild_id":"1"}}}"#
            ),
            None
        );
        assert_eq!(refused(r#"{"t":"RATE_LIMITED","d":"#), None);
    }
}
