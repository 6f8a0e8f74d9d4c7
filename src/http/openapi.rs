//! The OpenAPI document, generated from the handlers' annotations.

use std::collections::HashMap;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes,
    SecurityScheme,
};

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder, Responses};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "platform-server",
        description = "Authentication and usage analytics for the product platform. \
Every `/auth/*`, `/analytics/*` and legacy route needs the `X-API-Key` header; \
user routes also take a bearer access token. Errors are `{\"detail\": \"…\"}`.",
        license(name = "MIT"),
    ),
    paths(
        crate::http::health::health,
        crate::http::health::live,
        crate::http::health::ready,
        crate::http::auth::routes::register,
        crate::http::auth::routes::login,
        crate::http::auth::routes::token,
        crate::http::auth::routes::refresh,
        crate::http::auth::routes::logout,
        crate::http::auth::routes::verify,
        crate::http::auth::routes::get_profile,
        crate::http::auth::routes::put_profile,
        crate::http::auth::routes::list_users,
        crate::http::auth::routes::get_user,
        crate::http::auth::routes::patch_user,
        crate::http::auth::routes::delete_user,
        crate::http::auth::routes::jwks,
        crate::http::analytics::routes::post_event,
        crate::http::analytics::routes::post_events_batch,
        crate::http::analytics::routes::post_metric,
        crate::http::analytics::routes::post_metrics_batch,
        crate::http::analytics::routes::list_metrics,
        crate::http::analytics::routes::list_events,
        crate::http::analytics::routes::user_events,
        crate::http::analytics::routes::by_type,
        crate::http::analytics::routes::timeseries,
        crate::http::analytics::routes::dashboard,
        crate::http::analytics::routes::summary,
        crate::http::analytics::usage::get_usage,
        crate::http::analytics::usage::get_costs,
        crate::http::jobs::run_rollup,
        crate::http::jobs::run_retention,
        crate::http::legacy::register,
        crate::http::legacy::login,
        crate::http::legacy::verify,
        crate::http::legacy::get_profile,
        crate::http::legacy::put_profile,
        crate::http::legacy::post_event,
        crate::http::legacy::list_metrics,
        crate::http::legacy::get_usage,
        crate::http::legacy::get_costs,
    ),
    components(schemas(crate::http::ErrorBody)),
    modifiers(&SecuritySchemes, &CommonResponses),
    security(("api_key" = [])),
    tags(
        (name = "health", description = "Probes for orchestrators and humans"),
        (name = "auth", description = "Accounts, sessions and tokens"),
        (name = "admin", description = "User administration (admin role)"),
        (name = "analytics", description = "Events and metrics: ingestion and queries"),
        (name = "usage", description = "Usage and costs from the rollup jobs"),
        (name = "legacy", description = "Deprecated aliases of the original service"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "Service API key (API_KEY / API_KEYS)",
            ))),
        );
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::new([Flow::Password(Password::new(
                "/auth/token",
                Scopes::new(),
            ))])),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("Access token from /auth/login"))
                    .build(),
            ),
        );
    }
}

/// Answers every handler can give besides its own: the API-key guard's 401,
/// the request bounds' 408 and 431, the extractors' 413 and 422. Legacy aliases document exactly what their
/// successor does, since they run the same handler.
struct CommonResponses;

fn operations(item: &mut PathItem) -> [(usize, &mut Option<Operation>); 5] {
    [
        (0, &mut item.get),
        (1, &mut item.put),
        (2, &mut item.post),
        (3, &mut item.delete),
        (4, &mut item.patch),
    ]
}

fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
        .into()
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut answers: HashMap<(String, usize), Responses> = HashMap::new();
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                if let Some(op) = op {
                    answers.insert((path.clone(), method), op.responses.clone());
                }
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                let Some(op) = op else { continue };
                let legacy = op.tags.iter().flatten().any(|t| t == "legacy");
                if legacy
                    && let Some(r) = answers.get(&(crate::http::legacy::successor(path), method))
                {
                    op.responses = r.clone();
                }
                let responses = &mut op.responses.responses;
                if !crate::http::middleware::is_exempt(path) {
                    responses.entry("401".into()).or_insert_with(|| {
                        error("Missing or invalid API key, or an invalid bearer token")
                    });
                }
                responses
                    .entry("431".into())
                    .or_insert_with(|| error("Request headers over MAX_HEADER_BYTES"));
                if op.request_body.is_some() {
                    responses.entry("408".into()).or_insert_with(|| {
                        error("Body not received within BODY_IDLE_TIMEOUT / BODY_TIMEOUT")
                    });
                    responses
                        .entry("413".into())
                        .or_insert_with(|| error("Body over the size limit"));
                    responses
                        .entry("422".into())
                        .or_insert_with(|| error("Malformed or invalid body"));
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    responses
                        .entry("422".into())
                        .or_insert_with(|| error("Invalid parameters"));
                }
            }
        }
    }
}

/// The document with the crate version filled in.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The committed `openapi.yaml`, as `platform-server openapi` prints it.
pub fn yaml() -> String {
    document()
        .to_yaml()
        .expect("the OpenAPI document serializes")
}
