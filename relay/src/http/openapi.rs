//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa), so it cannot drift
//! from the code; served at `/openapi.json` and printed by `relay openapi`. What every response
//! carries by way of the shared layers (the request id, `Retry-After` on 429 and 503,
//! `WWW-Authenticate` on 401) is added here once ([`SharedHeaders`]), not repeated per handler.

use std::sync::{Arc, OnceLock};

use axum::Extension;
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::Required;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "relay",
        description = "An observability-first HTTP message relay. Errors are RFC 9457 problem details \
                       (`application/problem+json`) with a `request_id`; every response carries `x-request-id`. \
                       A method a documented path does not serve is answered 405 with an `Allow` header \
                       listing the ones it does (OpenAPI has no place for undeclared methods, so it is said here).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(openapi_json),
    tags(
        (name = "messages", description = "Store and read messages"),
        (name = "paste", description = "The pastebin API over the same messages"),
        (name = "app", description = "The timestamp log"),
        (name = "saved", description = "The saved string"),
        (name = "ops", description = "Health, readiness, metrics and this document"),
        (name = "web", description = "The web app"),
    ),
)]
pub struct ApiDoc;

/// Finish the document once every route's operations are in it: the security scheme and the shared
/// headers.
pub fn finish(openapi: &mut utoipa::openapi::OpenApi) {
    AdminToken.modify(openapi);
    SharedHeaders.modify(openapi);
}

/// The finished document, serialized once, on the first request for it (it is fixed for the life of
/// the process, and most processes, a Lambda sandbox above all, never serve it).
#[derive(Clone)]
pub struct OpenApiJson(Arc<Document>);

struct Document {
    document: utoipa::openapi::OpenApi,
    json: OnceLock<Bytes>,
}

impl OpenApiJson {
    pub fn new(document: utoipa::openapi::OpenApi) -> Self {
        Self(Arc::new(Document {
            document,
            json: OnceLock::new(),
        }))
    }

    pub fn document(&self) -> &utoipa::openapi::OpenApi {
        &self.0.document
    }

    fn json(&self) -> Bytes {
        let serialize = || Bytes::from(serde_json::to_vec(&self.0.document).unwrap_or_default());
        self.0.json.get_or_init(serialize).clone()
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = serde_json::Value, content_type = "application/json")))]
pub async fn openapi_json(Extension(spec): Extension<OpenApiJson>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], spec.json()).into_response()
}

/// The admin token scheme (only `PUT /saved` requires it) and, for everything else, no security at
/// all, said explicitly at the root (`security: []`).
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(Vec::new());
        // The relay serving the document: requests go to where it was fetched from.
        openapi.servers = Some(vec![Server::new("/")]);
    }
}

/// The headers the shared layers put on responses, on every response they apply to, and the trace
/// context headers every operation accepts.
struct SharedHeaders;

/// An optional request header of every operation.
fn header_parameter(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(description))
        .build()
}

fn documented_header(kind: Type, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(kind))
        .description(Some(description))
        .build()
}

impl Modify for SharedHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let parameters = operation.parameters.get_or_insert_with(Vec::new);
                parameters.push(header_parameter(
                    "traceparent",
                    "W3C trace context: the caller's trace, which the request's log lines join \
                     (`trace_id`). A malformed one is ignored (a new trace starts), never refused.",
                ));
                parameters.push(header_parameter(
                    "tracestate",
                    "W3C trace context vendor data; accepted with `traceparent`, not interpreted.",
                ));
                for (status, response) in operation.responses.responses.iter_mut() {
                    let utoipa::openapi::RefOr::T(response) = response else {
                        continue;
                    };
                    let headers = &mut response.headers;
                    headers.insert(
                        "x-request-id".into(),
                        documented_header(
                            Type::String,
                            "The request's id: the caller's when well-formed, else a new one",
                        ),
                    );
                    if status == "429" || status == "503" {
                        headers.insert(
                            "Retry-After".into(),
                            documented_header(Type::Integer, "Seconds to wait before retrying"),
                        );
                    }
                    if status == "401" {
                        headers.insert(
                            "WWW-Authenticate".into(),
                            documented_header(
                                Type::String,
                                "`Bearer`: the scheme the admin token uses",
                            ),
                        );
                    }
                }
            }
        }
    }
}
