//! Command line: `serve` (default), `migrate`, `openapi`, `healthcheck`.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "platform-server",
    version,
    about = "Authentication and usage analytics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply, revert or list database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the OpenAPI document as YAML.
    Openapi,
    /// Create an admin account, or promote an existing one.
    CreateAdmin {
        #[arg(long)]
        email: String,
        /// Read from ADMIN_PASSWORD when omitted (keeps it out of shell history).
        #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Exit 0 only if the local server's /health/ready answers 200.
    Healthcheck {
        /// Overrides http://127.0.0.1:$PORT/health/ready.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MigrateAction {
    /// Apply pending migrations.
    Up {
        #[arg(long)]
        steps: Option<u32>,
    },
    /// Revert applied migrations (one by default).
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
}
