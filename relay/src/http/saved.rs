//! `/saved`: one string shared by every user and every instance (it lives in the store), shown as an
//! HTML page and changed with an admin token. The value is always HTML-escaped when rendered.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Html;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::problem::Problem;
use crate::domain::SavedValue;
use crate::telemetry::events::{AuthFailure, Event, SavedStringUpdated};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_saved, put_saved))
}

/// The page showing the saved string.
#[utoipa::path(get, path = "/saved", tag = "saved",
    responses(
        (status = 200, description = "`<h1>The saved string is …</h1>`, HTML-escaped", body = String, content_type = "text/html"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_saved(State(state): State<AppState>) -> ApiResult<Html<String>> {
    let value = state
        .store
        .get_saved()
        .await?
        .unwrap_or_else(SavedValue::default_value);
    Ok(Html(render(&value)))
}

fn render(value: &SavedValue) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>Saved string · relayops</title>\
         <link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head>\n<body>\n<main class=\"saved\">\n\
         <h1>The saved string is {}</h1>\n<p><a href=\"/\">Back to the relayops app</a></p>\n</main>\n</body>\n</html>\n",
        escape_html(value.as_str())
    )
}

/// Escape text for an HTML text node or a quoted attribute value.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// The JSON form of a new saved string.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SavedInput {
    /// At most 4096 bytes.
    #[schema(max_length = 4096, example = "hello from on-call")]
    pub value: String,
}

/// Change the saved string (admin only).
///
/// Takes `text/plain` (the whole body is the value) or `application/json` (`{"value": "..."}`), and
/// `Authorization: Bearer <admin token>`. Without a configured admin token the string is read-only (403).
#[utoipa::path(put, path = "/saved", tag = "saved",
    request_body(content(
        (String = "text/plain"),
        (SavedInput = "application/json"),
    )),
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "Saved"),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No admin token is configured: the saved string is read-only", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Value too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither text/plain nor JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_saved(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    authorize(&state, &headers).inspect_err(|e| {
        if let ApiError::Unauthorized(reason) = e {
            (*reason).emit();
        } else {
            AuthFailure::NotConfigured.emit();
        }
    })?;
    let text = parse_saved_body(&headers, &body)?;
    let value = SavedValue::parse(&text).map_err(|e| ApiError::PayloadTooLarge(e.to_string()))?;
    state.store.put_saved(&value).await?;
    SavedStringUpdated {
        bytes: value.as_str().len(),
    }
    .emit();
    Ok(StatusCode::NO_CONTENT)
}

fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = &state.admin_token else {
        return Err(ApiError::WritesDisabled);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or(ApiError::Unauthorized(AuthFailure::Missing))?;
    if tokens_match(given, expected.expose()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(AuthFailure::Wrong))
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive (RFC 9110
/// section 11.1); one or more spaces follow it.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether a presented token is the admin token, in time that depends on neither how much of a guess
/// was right nor how long the token is: the SHA-256 digests (always 32 bytes) are compared in constant
/// time, where comparing the strings would return at once on a length mismatch.
fn tokens_match(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    bool::from(given.as_slice().ct_eq(expected.as_slice()))
}

fn parse_saved_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::InvalidBody("the body is not valid UTF-8".into()));
    match content_type.as_str() {
        "text/plain" => Ok(text?.to_owned()),
        "application/json" => {
            let input: SavedInput = serde_json::from_str(text?).map_err(|e| {
                ApiError::InvalidBody(format!("expected {{\"value\": \"...\"}}: {e}"))
            })?;
            Ok(input.value)
        }
        _ => Err(ApiError::UnsupportedMediaType(
            "send the value as text/plain, or as application/json {\"value\": \"...\"}".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_every_html_special_character() {
        assert_eq!(
            escape_html("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape_html("plain ✓"), "plain ✓");
    }

    #[test]
    fn the_page_holds_the_escaped_value_in_its_heading() {
        let value = SavedValue::parse("<b>hi</b>").unwrap_or_else(|_| SavedValue::default_value());
        let page = render(&value);
        assert!(
            page.contains("<h1>The saved string is &lt;b&gt;hi&lt;/b&gt;</h1>"),
            "{page}"
        );
    }

    #[test]
    fn the_bearer_token_is_read_whatever_the_scheme_case_and_nothing_else_is() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn tokens_match_only_when_equal_whatever_their_lengths() {
        let token = "the-admin-token-0123456789";
        assert!(tokens_match(token, token));
        assert!(
            !tokens_match("the-admin-token-012345678", token),
            "a prefix"
        );
        assert!(
            !tokens_match("the-admin-token-01234567890", token),
            "longer"
        );
        assert!(!tokens_match("", token));
        assert!(
            !tokens_match("xhe-admin-token-0123456789", token),
            "same length"
        );
    }
}
