//! `gatehouse commands register`: offer the slash commands the workers
//! answer. Run it once per deployment (and after an upgrade that changes
//! them); Discord's bulk overwrite makes a re-run harmless.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum CommandsCommand {
    /// Register /profile, /badges, /check and /link-wallet as the
    /// application's global commands.
    Register(RegisterArgs),
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// Bot token of the application.
    #[arg(long, env = "DISCORD_TOKEN", hide_env_values = true)]
    pub discord_token: String,

    /// The application's id (Discord developer portal → General Information).
    #[arg(long, env = "DISCORD_APPLICATION_ID")]
    pub application_id: wire::ApplicationId,

    /// Override of Discord's REST API base URL (the simulator's); unset in production.
    #[arg(long, env = "DISCORD_API_URL")]
    pub discord_api_url: Option<String>,
}

pub async fn run(command: CommandsCommand) -> anyhow::Result<ExitCode> {
    let CommandsCommand::Register(args) = command;
    let discord =
        worker::discord::Discord::new(&args.discord_token, args.discord_api_url.as_deref(), 1)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let names = discord
        .register_commands(args.application_id)
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
