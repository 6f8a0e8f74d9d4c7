//! The OpenAPI document, generated from the handlers' annotations.

use std::collections::HashMap;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes,
    SecurityScheme,
};

use actix_web::http::Method;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{Content, ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Responses};
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
        crate::http::auth::oauth::token,
        crate::http::auth::routes::refresh,
        crate::http::auth::routes::logout,
        crate::http::auth::routes::verify,
        crate::http::auth::routes::get_profile,
        crate::http::auth::routes::put_profile,
        crate::http::auth::accounts::change_password,
        crate::http::auth::accounts::forgot_password,
        crate::http::auth::accounts::reset_password,
        crate::http::auth::accounts::request_verification,
        crate::http::auth::accounts::verify_email,
        crate::http::auth::accounts::change_email,
        crate::http::auth::accounts::confirm_email_change,
        crate::http::auth::mfa::status,
        crate::http::auth::mfa::enroll_totp,
        crate::http::auth::mfa::activate_totp,
        crate::http::auth::mfa::remove_totp,
        crate::http::auth::mfa::regenerate_recovery_codes,
        crate::http::auth::mfa::verify,
        crate::http::auth::mfa::admin_remove,
        crate::http::auth::passkeys::register_start,
        crate::http::auth::passkeys::register_finish,
        crate::http::auth::passkeys::list,
        crate::http::auth::passkeys::rename,
        crate::http::auth::passkeys::delete,
        crate::http::auth::passkeys::second_factor_start,
        crate::http::auth::passkeys::login_start,
        crate::http::auth::passkeys::login_finish,
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
        crate::http::analytics::routes::export_events,
        crate::http::analytics::stream::stream_events,
        crate::http::analytics::routes::export_metrics,
        crate::http::analytics::routes::uniques,
        crate::http::analytics::routes::funnel,
        crate::http::analytics::routes::user_events,
        crate::http::analytics::routes::by_type,
        crate::http::analytics::routes::timeseries,
        crate::http::analytics::routes::dashboard,
        crate::http::analytics::routes::summary,
        crate::http::analytics::usage::get_usage,
        crate::http::analytics::usage::get_costs,
        crate::http::jobs::run_rollup,
        crate::http::jobs::run_retention,
        crate::http::jobs::run_partitions,
        crate::http::keys::create_key,
        crate::http::keys::list_keys,
        crate::http::keys::get_key,
        crate::http::keys::update_key,
        crate::http::keys::revoke_key,
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
        (name = "accounts", description = "Password change and reset, email verification and change (links go out by mail)"),
        (name = "mfa", description = "Second factors: TOTP, passkeys, recovery codes, the second step of a login, and passwordless login with a passkey"),
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
                "Service API key: a managed key (`psk_…`, from /admin/api-keys or `platform-server api-keys create`) or one of API_KEY / API_KEYS",
            ))),
        );
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::new("/auth/token", Scopes::new()))],
                "Password grant: your email and password; client_secret is an API key with the auth scope (client_id may be anything).",
            )),
        );
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "OAuth2 client_secret_basic: any client id, an API key with the auth scope as the secret",
                    ))
                    .build(),
            ),
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

fn operations(item: &mut PathItem) -> [(Method, &mut Option<Operation>); 5] {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::PATCH, &mut item.patch),
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

/// An error answer whose examples are bodies the server really sends.
fn error_with(description: &str, details: &[(&str, &str)]) -> RefOr<Response> {
    error_merged(description, details, None)
}

/// As `error_with`, keeping the examples a handler documented itself.
fn error_merged(
    description: &str,
    details: &[(&str, &str)],
    own: Option<&Response>,
) -> RefOr<Response> {
    let mut examples: Vec<(String, RefOr<utoipa::openapi::example::Example>)> = own
        .and_then(|r| r.content.get("application/json"))
        .and_then(|c| match c {
            RefOr::T(c) => Some(c.examples.clone().into_iter().collect()),
            RefOr::Ref(_) => None,
        })
        .unwrap_or_default();
    examples.extend(details.iter().map(|(name, detail)| {
        (
            name.to_string(),
            ExampleBuilder::new()
                .value(Some(serde_json::json!({ "detail": detail })))
                .build()
                .into(),
        )
    }));
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .examples_from_iter(examples)
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build()
        .into()
}

fn takes_bearer(op: &Operation) -> bool {
    op.security
        .iter()
        .flatten()
        .any(|req| serde_json::to_value(req).is_ok_and(|v| v.get("bearer").is_some()))
}

/// The 401 a guarded operation gives: its handler's own, the key guard's,
/// and for user routes the bearer token's.
fn unauthorized(op: &Operation) -> RefOr<Response> {
    let bearer = takes_bearer(op);
    let own = match op.responses.responses.get("401") {
        Some(RefOr::T(r)) if !bearer => Some(r),
        _ => None,
    };
    let mut details = vec![
        ("missing_key", "Missing API key"),
        ("bad_key", "Invalid API key"),
        ("revoked_key", "API key revoked"),
    ];
    if bearer {
        details.extend([
            ("missing_token", "Missing or invalid authorization header"),
            ("bad_token", "Invalid token"),
            ("expired_token", "Token expired"),
            ("revoked_token", "Token has been revoked"),
        ]);
    }
    let description = match (own, bearer) {
        (Some(r), _) => format!(
            "{}; or a missing, invalid, expired or revoked API key",
            r.description
        ),
        (None, true) => {
            "Missing or invalid API key, or a missing, invalid or revoked bearer token".into()
        }
        (None, false) => "Missing, invalid, expired or revoked API key".into(),
    };
    error_merged(&description, &details, own)
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut answers: HashMap<(String, Method), Responses> = HashMap::new();
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
                    && let Some(r) =
                        answers.get(&(crate::http::legacy::successor(path), method.clone()))
                {
                    op.responses = r.clone();
                }
                // A request's path, for the guard that reads it.
                let concrete = path.replace("{user_id}", "1").replace("{id}", "1");
                let scope = crate::http::callers::scope_for(&method, &concrete);
                let unauthorized = unauthorized(op);
                let admin_only = op.tags.iter().flatten().any(|t| t == "admin");
                let responses = &mut op.responses.responses;
                if let Some(scope) = scope {
                    // Replaces what the handler wrote, so the examples are the
                    // guard's and the token check's real bodies.
                    responses.insert("401".into(), unauthorized);
                    let detail = format!("API key lacks the '{scope}' scope");
                    let mut details = vec![("scope", detail.as_str())];
                    let description = match responses.get("403") {
                        Some(RefOr::T(own)) => {
                            if admin_only {
                                details.push(("not_admin", "Admin privileges required"));
                            }
                            format!(
                                "{}; or the API key lacks the '{scope}' scope",
                                own.description
                            )
                        }
                        _ => format!("The API key lacks the '{scope}' scope"),
                    };
                    responses.insert("403".into(), error_with(&description, &details));
                    responses.entry("429".into()).or_insert_with(|| {
                        if scope == crate::keys::Scope::Ingest {
                            error_with(
                                "The API key's rate or daily ingest quota is spent; see Retry-After and RateLimit-*",
                                &[("rate", "Rate limit exceeded"), ("quota", "Daily ingest quota exceeded")],
                            )
                        } else {
                            error_with(
                                "The API key's rate is spent; see Retry-After and RateLimit-*",
                                &[("rate", "Rate limit exceeded")],
                            )
                        }
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
