//! The slash commands the workers answer, as registered with Discord.
//!
//! One list serves both sides: `gatehouse commands register` sends it to
//! Discord, and the handler's tests check that every command in it is
//! answered, so a command cannot be offered that nobody handles.

use twilight_model::application::{
    command::{Command, CommandType},
    interaction::InteractionContextType,
};
use twilight_util::builder::command::{CommandBuilder, StringBuilder};

/// Names of the commands, as the interaction handler matches them.
pub const PROFILE: &str = "profile";
pub const BADGES: &str = "badges";
pub const CHECK: &str = "check";
pub const LINK_WALLET: &str = "link-wallet";
pub const WALLETS: &str = "wallets";

/// The global chat-input commands. Guild-only: every answer is about the
/// member's standing in one community.
pub fn definitions() -> Vec<Command> {
    let guild_only = || [InteractionContextType::Guild];
    vec![
        CommandBuilder::new(
            PROFILE,
            "Your wallet, tier, roles from rules and badges in this community",
            CommandType::ChatInput,
        )
        .contexts(guild_only())
        .build(),
        CommandBuilder::new(
            BADGES,
            "The badges you hold in this community",
            CommandType::ChatInput,
        )
        .contexts(guild_only())
        .build(),
        CommandBuilder::new(
            CHECK,
            "Re-check your eligibility now and update your roles",
            CommandType::ChatInput,
        )
        .contexts(guild_only())
        .build(),
        CommandBuilder::new(
            LINK_WALLET,
            "Link a wallet: run without options for a link to sign in your browser wallet",
            CommandType::ChatInput,
        )
        .contexts(guild_only())
        .option(
            StringBuilder::new(
                "address",
                "No browser wallet? The wallet address, for a message to sign elsewhere",
            )
            .min_length(42)
            .max_length(42),
        )
        .option(StringBuilder::new(
            "signature",
            "The personal_sign signature of the message you were given",
        ))
        .build(),
        CommandBuilder::new(
            WALLETS,
            "Your linked wallets; unlink one with the unlink option",
            CommandType::ChatInput,
        )
        .contexts(guild_only())
        .option(
            StringBuilder::new("unlink", "The address of a wallet to unlink")
                .min_length(42)
                .max_length(42),
        )
        .build(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_passes_discord_validation() {
        for command in definitions() {
            let name = command.name.clone();
            twilight_validate::command::command(&command)
                .unwrap_or_else(|e| panic!("/{name} would be refused by Discord: {e}"));
        }
        // And the validator does catch what Discord refuses.
        let bad = CommandBuilder::new("Not Valid", "x", CommandType::ChatInput).build();
        assert!(twilight_validate::command::command(&bad).is_err());
    }

    #[test]
    fn names_are_the_ones_the_handler_matches() {
        // The handler matches on these constants; a definition under any
        // other name would be offered to members and never answered.
        let names: Vec<String> = definitions().into_iter().map(|c| c.name).collect();
        assert_eq!(names, [PROFILE, BADGES, CHECK, LINK_WALLET, WALLETS]);
    }
}
