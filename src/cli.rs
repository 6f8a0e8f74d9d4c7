//! Command line: `serve` (default), `migrate`, `openapi`, `create-admin`,
//! `api-keys`, `healthcheck`.

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
    /// Create, list and revoke managed API keys.
    ApiKeys {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Exit 0 only if the local server's /health/ready answers 200.
    Healthcheck {
        /// Overrides http://127.0.0.1:$PORT/health/ready.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// Create a key and print its secret (shown only this once).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: auth, ingest, read, admin.
        #[arg(long)]
        scopes: String,
        /// Requests per second, shared by all replicas.
        #[arg(long)]
        rate_per_second: Option<i64>,
        /// Events and metrics per UTC day.
        #[arg(long)]
        daily_ingest_quota: Option<i64>,
        /// The key stops working after this many days.
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id; every replica refuses it within a second.
    Revoke { id: i32 },
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
