//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes,
    SecurityScheme,
};
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
        crate::health::health,
        crate::health::live,
        crate::health::ready,
        crate::auth::routes::register,
        crate::auth::routes::login,
        crate::auth::routes::token,
        crate::auth::routes::refresh,
        crate::auth::routes::logout,
        crate::auth::routes::verify,
        crate::auth::routes::get_profile,
        crate::auth::routes::put_profile,
        crate::auth::routes::list_users,
        crate::auth::routes::get_user,
        crate::auth::routes::patch_user,
        crate::auth::routes::delete_user,
        crate::auth::routes::jwks,
        crate::analytics::routes::post_event,
        crate::analytics::routes::post_events_batch,
        crate::analytics::routes::post_metric,
        crate::analytics::routes::post_metrics_batch,
        crate::analytics::routes::list_metrics,
        crate::analytics::routes::list_events,
        crate::analytics::routes::user_events,
        crate::analytics::routes::by_type,
        crate::analytics::routes::timeseries,
        crate::analytics::routes::dashboard,
        crate::analytics::routes::summary,
        crate::analytics::usage::get_usage,
        crate::analytics::usage::get_costs,
        crate::analytics::usage::run_rollup,
        crate::analytics::usage::run_retention,
        crate::legacy::register,
        crate::legacy::login,
        crate::legacy::verify,
        crate::legacy::get_profile,
        crate::legacy::put_profile,
        crate::legacy::post_event,
        crate::legacy::list_metrics,
        crate::legacy::get_usage,
        crate::legacy::get_costs,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&SecuritySchemes),
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
