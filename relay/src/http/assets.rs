//! The web app's files, embedded in the binary at build time (no CDN, nothing fetched at run time).
//! Served with a content hash as a strong ETag, so browsers revalidate cheaply.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    etag: &'static str,
}

/// FNV-1a, computed at compile time: a content fingerprint for ETags, not a security hash.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const fn hex_etag(hash: u64) -> [u8; 18] {
    let digits = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = digits[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($path:literal, $file:literal, $content_type:literal) => {{
        const BYTES: &[u8] = include_bytes!(concat!("../web/", $file));
        const TAG: [u8; 18] = hex_etag(fnv1a(BYTES));
        Asset {
            path: $path,
            content_type: $content_type,
            bytes: BYTES,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

const INDEX: Asset = asset!("/", "index.html", "text/html; charset=utf-8");
const OTHERS: [Asset; 3] = [
    asset!("/assets/app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!("/assets/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/favicon.svg", "favicon.svg", "image/svg+xml"),
];

pub fn router() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new().routes(routes!(index));
    for asset in &OTHERS {
        router = router.route(
            asset.path,
            get(move |request: Request| async move { serve(asset, &request) }),
        );
    }
    router
}

/// The web app.
#[utoipa::path(get, path = "/", tag = "web",
    responses(
        (status = 200, description = "The web app's HTML page", body = String, content_type = "text/html", headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the given ETag", headers(("ETag" = String))),
    ))]
pub async fn index(request: Request) -> Response {
    serve(&INDEX, &request)
}

fn serve(asset: &Asset, request: &Request) -> Response {
    let unchanged = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == asset.etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.bytes.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_hex_fingerprints_that_differ_by_content() {
        assert_eq!(INDEX.etag.len(), 18);
        assert!(INDEX.etag.starts_with('"') && INDEX.etag.ends_with('"'));
        assert_ne!(hex_etag(fnv1a(b"a")), hex_etag(fnv1a(b"b")));
    }
}
