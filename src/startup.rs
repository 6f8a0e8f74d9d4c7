//! Builds the application: storage, cache, HTTP server, admin listener.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header::ContentType;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use rand::Rng;
use utoipa_swagger_ui::{Config, SwaggerUi};

use secrecy::ExposeSecret;

use crate::config::{RunEnvironment, Settings};
use crate::http::callers::authorize_caller;
use crate::http::middleware::observe;
use crate::http::{AppState, json_error};

/// Tasks that outlive requests (the ingest writers, jobs). Stopped after the
/// HTTP server, so requests still waiting for a commit get their answer.
pub struct Background {
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// How long a stop waits for the database pool to close.
const POOL_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
        let jobs = state.jobs.start(&background.shutdown.subscribe());
        background.tasks.extend(jobs);
        background.tasks.push(tokio::spawn(flush_revocations(
            state.auth.clone(),
            background.shutdown.subscribe(),
        )));
        background.tasks.push(tokio::spawn(crate::telemetry::upkeep(
            background.shutdown.subscribe(),
        )));
        background
            .tasks
            .push(tokio::spawn(crate::http::health::watch(
                state.clone(),
                background.shutdown.subscribe(),
            )));
        // The dummy hash that equalises login timing, computed off the start path.
        let hasher = state.auth.hasher.clone();
        tokio::spawn(async move { hasher.warm_up().await });
        let http = &settings.http;
        let generated_api_key = state.keys.generated().map(str::to_string);

        let listener = TcpListener::bind((http.bind_address, http.port))
            .with_context(|| format!("binding {}:{}", http.bind_address, http.port))?;
        let port = listener.local_addr()?.port();

        let (metrics_server, metrics_port) = if http.metrics_enabled {
            let l =
                TcpListener::bind((http.bind_address, http.metrics_port)).with_context(|| {
                    format!(
                        "binding METRICS_PORT {}:{}",
                        http.bind_address, http.metrics_port
                    )
                })?;
            let p = l.local_addr()?.port();
            let server = crate::http::admin::metrics_server(
                l,
                state.db.clone(),
                settings.database.max_connections,
            )?;
            (Some(server), Some(p))
        } else {
            (None, None)
        };

        let data = web::Data::new(state.clone());
        let cors_origins = http.cors_origins.clone();
        let body_limit = http.body_limit;
        let json_limits = crate::http::bounded::JsonLimits::new(&settings.analytics);
        let request_limits = web::Data::new(crate::http::limits::RequestLimits::new(http));

        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(request_limits.clone())
                .configure(crate::http::body::extractors(body_limit, json_limits))
                .configure(crate::http::health::routes)
                .configure(crate::http::auth::routes::routes)
                .configure(crate::http::analytics::routes::routes)
                .configure(crate::http::analytics::usage::routes)
                .configure(crate::http::jobs::routes)
                .configure(crate::http::keys::routes)
                .configure(crate::http::legacy::routes)
                .configure(crate::http::dashboard::routes)
                .route("/openapi.json", web::get().to(serve_openapi))
                .service(SwaggerUi::new("/docs/{_:.*}").config(Config::new(["/openapi.json"])))
                .route("/docs", web::get().to(redirect_to_docs))
                .route("/", web::get().to(redirect_to_docs))
                .default_service(web::to(not_found))
                .wrap(from_fn(crate::http::body::refuse_nul))
                .wrap(from_fn(authorize_caller))
                .wrap(cors(cors_origins.as_deref()))
                .wrap(from_fn(crate::http::limits::bound_request))
                .wrap(from_fn(observe))
                .wrap(security_headers())
        })
        .shutdown_timeout(http.shutdown_timeout)
        // Signals are handled in `run_until_stopped`: live streams, which
        // never finish by themselves, must end before the drain.
        .disable_signals()
        .listen(listener)?;
        if http.workers > 0 {
            server = server.workers(http.workers);
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
        let (handle, live) = (self.server.handle(), self.state.live.clone());
        tokio::spawn(async move {
            stop_signal().await;
            tracing::info!("stop signal: closing live streams and draining requests");
            live.close();
            handle.stop(true).await;
        });
        self.server.await?;
        tracing::info!("HTTP server stopped; draining the ingest queue");
        self.background.stop().await;
        if let Some(handle) = metrics_handle {
            handle.stop(true).await;
        }
        // A connection dropped mid-statement (a job's run, stopped above) is
        // only given back once its statement ends; the process need not wait:
        // its transaction rolls back when the connection goes.
        if tokio::time::timeout(POOL_CLOSE_WAIT, self.state.db.close_by_ref())
            .await
            .is_err()
        {
            tracing::warn!("database connections still busy at stop; leaving them to close");
        }
        Ok(())
    }
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "SIGTERM cannot be followed; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Storage, migrations, cache and the services: everything but HTTP.
pub async fn build_state(settings: Settings) -> anyhow::Result<(AppState, Background)> {
    let db = crate::db::connect(&settings.database).await?;
    if settings.database.run_migrations {
        crate::db::migrate(&db).await?;
    }
    let reads = crate::db::replicas::Reads::new(
        db.clone(),
        &settings.database.replica_urls,
        settings.database.replica_max_lag,
        settings.database.acquire_timeout,
    )
    .await?;
    let cache = crate::cache::build(&settings.cache)?;
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let live = crate::analytics::live::LiveFeed::new(settings.analytics.stream);
    let writer =
        crate::analytics::queue::start(db.clone(), &settings.analytics, live.clone(), shutdown_rx);
    let mut background = Background {
        shutdown,
        tasks: writer.tasks,
    };
    background
        .tasks
        .extend(live.start(cache.clone(), background.shutdown.subscribe()));
    background
        .tasks
        .extend(cache.start(background.shutdown.subscribe()));
    background
        .tasks
        .extend(reads.start(background.shutdown.subscribe()));
    let mailer = crate::mail::Mailer::new(db.clone(), &settings.mail, &settings.auth.jwt.secret)?;
    background
        .tasks
        .push(mailer.start(background.shutdown.subscribe()));
    let auth = crate::auth::Auth::new(db.clone(), cache.clone(), &settings.auth, mailer)?;
    if let Some(admin) = &settings.auth.admin {
        auth.ensure_admin(&admin.email, admin.password.expose_secret())
            .await
            .map_err(|e| anyhow::anyhow!("creating ADMIN_EMAIL: {e}"))?;
    }
    let key_settings = &settings.api_keys;
    let generated = (key_settings.keys.is_empty()
        && key_settings.required
        && settings.environment == RunEnvironment::Development)
        .then(generate_key);
    let keys = Arc::new(crate::keys::Keys::new(
        db.clone(),
        cache.clone(),
        key_settings.keys.iter().map(|k| k.expose_secret()),
        key_settings.required,
        generated,
    ));
    let state = AppState {
        keys,
        jobs: crate::jobs::Jobs::new(
            db.clone(),
            &settings.jobs,
            settings.analytics.retention_days,
        ),
        ingest: writer.handle,
        live,
        reads,
        db,
        cache,
        auth,
        settings: Arc::new(settings),
        started_at: Instant::now(),
    };
    Ok((state, background))
}

async fn flush_revocations(
    auth: Arc<crate::auth::Auth>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => auth.flush_pending_revocations().await,
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
            // The live stream's resume point.
            header::HeaderName::from_static("last-event-id"),
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

/// `/openapi.json`, serialised on first request and then shared: built at
/// start (or per worker, as the Swagger UI crate would) it cost each process
/// about 4 MiB of heap and code pages that most never use.
async fn serve_openapi() -> HttpResponse {
    static DOC: std::sync::OnceLock<web::Bytes> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| {
        serde_json::to_vec(&crate::http::openapi::document())
            .expect("the OpenAPI document serializes")
            .into()
    });
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(doc.clone())
}

async fn not_found() -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, "Not Found")
}
