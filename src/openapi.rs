//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
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
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&SecuritySchemes),
    security(("api_key" = [])),
    tags(
        (name = "health", description = "Probes for orchestrators and humans"),
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
