//! Builds the application: storage, cache, HTTP server, admin listener.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use rand::Rng;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::{RunEnvironment, Settings};
use crate::error::json_error;
use crate::middleware::{ApiKeys, observe, require_api_key};
use crate::state::{AppState, Background};

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: Server,
    metrics_server: Option<Server>,
    state: AppState,
    background: Background,
    generated_api_key: Option<String>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (state, mut background) = build_state(settings).await?;
        let settings = state.settings.clone();
        let jobs = crate::jobs::start(state.clone(), background.shutdown.subscribe());
        background.tasks.extend(jobs);
        background.tasks.push(tokio::spawn(flush_revocations(
            state.clone(),
            background.shutdown.subscribe(),
        )));
        background.tasks.push(tokio::spawn(crate::telemetry::upkeep(
            background.shutdown.subscribe(),
        )));
        // The dummy hash that equalises login timing, computed off the start path.
        let hasher = state.auth.hasher.clone();
        tokio::spawn(async move { hasher.warm_up().await });
        let mut keys = settings.api_key_list();
        let mut generated_api_key = None;
        if keys.is_empty()
            && settings.require_api_key
            && settings.run_environment() == RunEnvironment::Development
        {
            let key = generate_key();
            keys.push(key.clone());
            generated_api_key = Some(key);
        }
        let api_keys = web::Data::new(ApiKeys::new(&keys, settings.require_api_key));

        let listener = TcpListener::bind((settings.bind_address.as_str(), settings.port))
            .with_context(|| format!("binding {}:{}", settings.bind_address, settings.port))?;
        let port = listener.local_addr()?.port();

        let (metrics_server, metrics_port) = if settings.metrics_enabled {
            let l = TcpListener::bind((settings.bind_address.as_str(), settings.metrics_port))
                .with_context(|| {
                    format!(
                        "binding METRICS_PORT {}:{}",
                        settings.bind_address, settings.metrics_port
                    )
                })?;
            let p = l.local_addr()?.port();
            let server = crate::telemetry::metrics_server(
                l,
                state.db.clone(),
                settings.database_max_connections,
            )?;
            (Some(server), Some(p))
        } else {
            (None, None)
        };

        let data = web::Data::new(state.clone());
        let openapi = crate::openapi::document();
        let cors_origins = settings.cors_origins()?;
        let body_limit = settings.json_body_limit;

        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(api_keys.clone())
                .configure(crate::http::extractors(body_limit))
                .configure(crate::health::routes)
                .configure(crate::auth::routes::routes)
                .configure(crate::analytics::routes::routes)
                .configure(crate::analytics::usage::routes)
                .configure(crate::legacy::routes)
                .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi.clone()))
                .route("/docs", web::get().to(redirect_to_docs))
                .route("/", web::get().to(redirect_to_docs))
                .default_service(web::to(not_found))
                .wrap(from_fn(crate::http::refuse_nul))
                .wrap(from_fn(require_api_key))
                .wrap(cors(cors_origins.as_deref()))
                .wrap(from_fn(observe))
                .wrap(security_headers())
        })
        .shutdown_timeout(settings.shutdown_timeout)
        .listen(listener)?;
        if settings.workers > 0 {
            server = server.workers(settings.workers);
        }

        Ok(Application {
            port,
            metrics_port,
            server: server.run(),
            metrics_server,
            state,
            background,
            generated_api_key,
        })
    }

    /// Stops the server as a signal would (graceful when asked).
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The key generated at start in development when none was configured.
    pub fn generated_api_key(&self) -> Option<&str> {
        self.generated_api_key.as_deref()
    }

    /// Serves until SIGTERM/SIGINT (or the server handle stops it), lets
    /// in-flight requests finish, then closes the admin listener and pools.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let metrics_handle = self.metrics_server.as_ref().map(|s| s.handle());
        if let Some(metrics) = self.metrics_server {
            tokio::spawn(metrics);
        }
        self.server.await?;
        tracing::info!("HTTP server stopped; draining the ingest queue");
        self.background.stop().await;
        if let Some(handle) = metrics_handle {
            handle.stop(true).await;
        }
        self.state.db.close_by_ref().await.ok();
        Ok(())
    }
}

/// Storage, migrations, cache and auth material: everything but HTTP.
pub async fn build_state(settings: Settings) -> anyhow::Result<(AppState, Background)> {
    settings.validate()?;
    let db = crate::db::connect(&settings).await?;
    if settings.run_migrations {
        crate::db::migrate(&db).await?;
    }
    let cache = crate::cache::build(
        settings.redis_url()?.as_deref(),
        &settings.redis_key_prefix,
        settings.redis_pool_size,
    )?;
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let writer = crate::analytics::ingest::start(
        db.clone(),
        settings.ingest_queue_capacity,
        settings.ingest_max_batch_rows,
        Duration::from_secs(settings.ingest_wait_timeout),
        match db.get_database_backend() {
            sea_orm::DbBackend::Postgres => settings.ingest_writers,
            _ => 1,
        },
        shutdown_rx,
    );
    let background = Background {
        shutdown,
        tasks: writer.tasks,
    };
    let state = AppState {
        jobs: Arc::new(crate::jobs::JobsContext::new(
            crate::jobs::pricing::PriceTable::new(&settings.price_list()?),
        )),
        ingest: writer.handle,
        db,
        cache,
        auth: crate::auth::AuthContext::from_settings(&settings)?,
        trusted_proxies: Arc::new(settings.trusted_proxies()?),
        settings: Arc::new(settings),
        started_at: Instant::now(),
    };
    if !state.settings.admin_email.is_empty() {
        crate::auth::service::ensure_admin(
            &state,
            &state.settings.admin_email,
            &state.settings.admin_password,
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating ADMIN_EMAIL: {e}"))?;
    }
    Ok((state, background))
}

async fn flush_revocations(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => crate::auth::service::flush_pending_revocations(&state).await,
            _ = shutdown.changed() => return,
        }
    }
}

fn generate_key() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

/// Headers every response carries unless its handler set them (ASVS 14.4,
/// 8.2.1): API answers are never sniffed, framed or cached by the browser.
fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("Cache-Control", "no-store"))
}

fn cors(origins: Option<&[String]>) -> Cors {
    let base = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("x-api-key"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(3600);
    match origins {
        // Any origin, but never with credentials: the original reflected
        // every origin with credentials allowed.
        None => base.allow_any_origin().send_wildcard(),
        Some(list) => list
            .iter()
            .fold(base, |c, o| c.allowed_origin(o))
            .supports_credentials(),
    }
}

async fn redirect_to_docs() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

async fn not_found() -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, "Not Found")
}
