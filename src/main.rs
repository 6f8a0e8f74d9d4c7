use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use migration::{Migrator, MigratorTrait};
use platform_server::cli::{Cli, Command, KeyAction, MigrateAction};
use platform_server::config::Settings;
use platform_server::startup::Application;

fn main() -> ExitCode {
    return_large_buffers_to_the_os();
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        print!("{}", platform_server::http::openapi::yaml());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("platform-server: {e}");
            return ExitCode::from(2);
        }
    };
    // HTTP requests run on actix's own worker threads; this runtime holds
    // the ingest writers, jobs and listeners. On 2 cores one thread of it
    // beat two: single events +7%, batches +4% (README, Benchmarks).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.http.background_threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::Migrate { action } => migrate(settings, action).await,
            Command::Healthcheck { url } => healthcheck(&settings, url).await,
            Command::CreateAdmin { email, password } => {
                create_admin(settings, &email, &password).await
            }
            Command::ApiKeys { action } => api_keys(settings, action).await,
            Command::Openapi => unreachable!("handled before loading settings"),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("platform-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc raises its mmap threshold each time a large buffer is freed, after
/// which buffers of that size come from arenas it rarely gives back: a few
/// 8 MiB bodies left RSS 30 MiB higher for good. A fixed threshold keeps
/// large buffers (bodies, batches) in mappings that go back when freed.
fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    // Held until the server has stopped: dropping it flushes the last lines.
    let _log = platform_server::telemetry::init_tracing(&settings.log);
    let app = Application::build(settings.clone()).await?;
    let host = if settings.http.bind_address.is_unspecified() {
        "localhost".to_string()
    } else {
        settings.http.bind_address.to_string()
    };
    let port = app.port();
    let db = platform_server::db::backend_name(&app.state().db);
    let cache = app.state().cache.backend();
    println!(
        "platform-server {} ({}) listening on http://{host}:{port}",
        env!("CARGO_PKG_VERSION"),
        settings.environment
    );
    println!("  Swagger UI:  http://{host}:{port}/docs/");
    println!("  storage:     {db}; cache: {cache}");
    if let Some(p) = app.metrics_port() {
        println!("  Prometheus:  http://{host}:{p}/metrics");
    }
    match (app.generated_api_key(), settings.api_keys.required) {
        (Some(key), _) => {
            println!("  API key:     {key}  (generated for this run; set API_KEY to fix it)")
        }
        (None, true) => println!(
            "  API key:     from API_KEY/API_KEYS ({} configured)",
            settings.api_keys.keys.len()
        ),
        (None, false) => println!("  API key:     not required (REQUIRE_API_KEY=false)"),
    }
    app.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(settings: Settings, action: MigrateAction) -> anyhow::Result<ExitCode> {
    let _log = platform_server::telemetry::init_tracing(&settings.log);
    let db = platform_server::db::connect(&settings.database).await?;
    match action {
        MigrateAction::Up { steps } => Migrator::up(&db, steps).await?,
        MigrateAction::Down { steps } => Migrator::down(&db, Some(steps)).await?,
        MigrateAction::Status => {
            for m in Migrator::get_migration_with_status(&db).await? {
                println!("{:?}\t{}", m.status(), m.name());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn create_admin(
    mut settings: Settings,
    email: &str,
    password: &str,
) -> anyhow::Result<ExitCode> {
    let _log = platform_server::telemetry::init_tracing(&settings.log);
    // The bootstrap settings would create a second admin here; this command is explicit.
    settings.auth.admin = None;
    settings.http.metrics_enabled = false;
    let (state, background) = platform_server::startup::build_state(settings).await?;
    let user = state
        .auth
        .ensure_admin(email, password)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("admin: id {} <{}>", user.id, user.email);
    background.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn api_keys(settings: Settings, action: KeyAction) -> anyhow::Result<ExitCode> {
    use platform_server::keys::{Keys, NewKey, Scopes};
    let db = platform_server::db::connect(&settings.database).await?;
    if settings.database.run_migrations {
        platform_server::db::migrate(&db).await?;
    }
    // Managing keys needs no cache: replicas re-read a key within a second.
    let cache = std::sync::Arc::new(platform_server::cache::MemoryCache::new());
    let keys = Keys::new(db.clone(), cache, [], true, None);
    let fail = |e: platform_server::keys::KeyError| anyhow::anyhow!("{e}");
    match action {
        KeyAction::Create {
            name,
            scopes,
            rate_per_second,
            daily_ingest_quota,
            expires_in_days,
        } => {
            let expires_at = expires_in_days
                .map(|d| {
                    chrono::Duration::try_days(d)
                        .filter(|_| d > 0)
                        .ok_or_else(|| anyhow::anyhow!("--expires-in-days must be positive"))
                })
                .transpose()?
                .map(|d| platform_server::time::now() + d);
            let new = NewKey::new(
                &name,
                Scopes::parse(&scopes).map_err(fail)?,
                rate_per_second,
                daily_ingest_quota,
                expires_at,
                Some("cli".into()),
            )
            .map_err(fail)?;
            let created = keys.create(new).await.map_err(fail)?;
            println!("id:     {}", created.key.id);
            println!("name:   {}", created.key.name);
            println!("scopes: {}", created.key.scopes);
            println!("secret: {}", created.secret);
            eprintln!("The secret is shown only now; keep it somewhere safe.");
        }
        KeyAction::List => {
            println!("id\tname\tprefix\tscopes\trate/s\tquota/day\texpires\tlast used\trevoked");
            let show = |t: Option<chrono::NaiveDateTime>| {
                t.map_or("-".to_string(), |t| {
                    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
                })
            };
            for k in keys.list().await.map_err(fail)? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.name,
                    k.prefix,
                    k.scopes,
                    k.rate_per_second.map_or("-".into(), |r| r.to_string()),
                    k.daily_ingest_quota.map_or("-".into(), |q| q.to_string()),
                    show(k.expires_at),
                    show(k.last_used_at),
                    show(k.revoked_at),
                );
            }
        }
        KeyAction::Revoke { id } => {
            let k = keys.revoke(id).await.map_err(fail)?;
            println!("revoked: id {} ({})", k.id, k.name);
        }
    }
    db.close().await.ok();
    Ok(ExitCode::SUCCESS)
}

async fn healthcheck(settings: &Settings, url: Option<String>) -> anyhow::Result<ExitCode> {
    let url =
        url.unwrap_or_else(|| format!("http://127.0.0.1:{}/health/ready", settings.http.port));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    match client.get(&url).send().await {
        Ok(resp) if resp.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(resp) => {
            eprintln!("healthcheck: {url} answered {}", resp.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("healthcheck: {url}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
