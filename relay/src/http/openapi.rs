//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa), so it cannot drift
//! from the code; served at `/openapi.json` and printed by `relay openapi`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "relay",
        description = "An observability-first HTTP message relay. Errors are RFC 9457 problem details \
                       (`application/problem+json`) with a `request_id`; every response carries `x-request-id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&AdminToken),
    tags(
        (name = "messages", description = "Store and read messages"),
        (name = "paste", description = "The pastebin API over the same messages"),
        (name = "app", description = "The timestamp log"),
        (name = "saved", description = "The saved string"),
        (name = "ops", description = "Health, readiness and metrics"),
        (name = "web", description = "The web app"),
    ),
)]
pub struct ApiDoc;

struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
