//! `gatehouse commands register`: offer the slash commands the workers
//! answer. Run it once per deployment (and after an upgrade that changes
//! them); Discord's bulk overwrite makes a re-run harmless.

use std::process::ExitCode;

use settings::Problems;

use crate::{
    config::Labels,
    discord_args::{check_api_url, DiscordTokenArgs},
};

#[derive(Debug, clap::Subcommand)]
pub enum CommandsCommand {
    /// Register /profile, /badges, /check, /link-wallet and /wallets as the
    /// application's global commands.
    Register(RegisterArgs),
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub token: DiscordTokenArgs,

    /// The application's id (Discord developer portal → General Information).
    #[arg(long, env = "DISCORD_APPLICATION_ID")]
    pub application_id: Option<String>,

    /// Override of Discord's REST API base URL (the simulator's); unset in production.
    #[arg(long, env = "DISCORD_API_URL")]
    pub discord_api_url: Option<String>,
}

pub async fn run(command: CommandsCommand) -> anyhow::Result<ExitCode> {
    let CommandsCommand::Register(args) = command;
    let l = Labels::of::<RegisterArgs>();
    let mut problems = Problems::new();
    let token = args.token.required(&mut problems);
    let application_id = match args.application_id.as_deref() {
        Some(text) => problems.parse::<wire::ApplicationId>(
            &l.get("application_id"),
            text,
            "an application id (a number)",
        ),
        None => {
            problems.push(
                l.get("application_id"),
                "not set: the application's id, from Discord's developer portal",
            );
            None
        }
    };
    if let Some(url) = &args.discord_api_url {
        problems.check(&l.get("discord_api_url"), check_api_url(url));
    }
    problems.finish()?;
    let (Some(token), Some(application_id)) = (token, application_id) else {
        anyhow::bail!("commands register: settings refused without a reason (a bug)");
    };
    // One request, no role changes: nothing to share with the workers.
    let discord = worker::discord::Discord::new(
        token.expose(),
        args.discord_api_url.as_deref(),
        worker::discord::RoleChangeLimits::default(),
        worker::discord::Sharing::Alone,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let names = discord
        .register_commands(application_id)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}; check DISCORD_TOKEN and DISCORD_APPLICATION_ID (--application-id) belong to the same application"
            )
        })?;
    println!(
        "registered {} global commands: /{}",
        names.len(),
        names.join(", /")
    );
    Ok(ExitCode::SUCCESS)
}
