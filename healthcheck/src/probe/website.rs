//! The website probe: `GET /` is the web app (`text/html`), the page references `/assets/app.js` and
//! `/assets/app.css`, and every same-origin `/assets/` file it references loads with the content type
//! its extension calls for. References are resolved against the page URL as a browser would, so a
//! relay behind a base path that emits root-relative links fails here, as it would for a person.
//! It must never execute or render anything: it reads attributes, it is not a browser.

use reqwest::{Method, StatusCode, Url};

use super::http::{Session, quoted_start};
use crate::outcome::Failure;

/// Files the page must reference, by the end of their path.
const REQUIRED: [&str; 2] = ["/assets/app.js", "/assets/app.css"];

pub async fn check(session: &mut Session<'_>) -> Result<String, Failure> {
    let page_url = session.url("/")?;
    let page = session.send(Method::GET, page_url.clone(), None).await?;
    page.expect_status(StatusCode::OK)?;
    page.expect_content_type(&["text/html"])?;
    let html = page.text()?;
    if !html.to_ascii_lowercase().contains("<html") {
        return Err(page.body_failure(format!(
            "not an HTML document (body starts {})",
            quoted_start(&page.body)
        )));
    }

    let assets = asset_references(html, &page_url);
    for required in REQUIRED {
        if !assets.iter().any(|u| u.path().ends_with(required)) {
            return Err(page.mismatch(format!(
                "the page does not reference {required} (it references {})",
                if assets.is_empty() {
                    "no /assets/ file".to_owned()
                } else {
                    assets.iter().map(Url::path).collect::<Vec<_>>().join(", ")
                }
            )));
        }
    }

    for asset in &assets {
        let response = session.send(Method::GET, asset.clone(), None).await?;
        response.expect_status(StatusCode::OK)?;
        if let Some(types) = expected_types(asset.path()) {
            response.expect_content_type(types)?;
        }
        if response.body.is_empty() {
            return Err(response.body_failure("the file is empty".to_owned()));
        }
    }
    let names: Vec<&str> = assets
        .iter()
        .filter_map(|u| u.path().rsplit('/').next())
        .collect();
    Ok(format!(
        "page and {} assets ({}) loaded",
        assets.len(),
        names.join(", ")
    ))
}

/// The content types a file's extension calls for (None: anything goes).
fn expected_types(path: &str) -> Option<&'static [&'static str]> {
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    match extension.as_str() {
        "js" | "mjs" => Some(&["text/javascript", "application/javascript"]),
        "css" => Some(&["text/css"]),
        "svg" => Some(&["image/svg+xml"]),
        "png" => Some(&["image/png"]),
        "woff2" => Some(&["font/woff2"]),
        _ => None,
    }
}

/// Every distinct same-origin URL under an `/assets/` path that a `src` or `href` attribute names,
/// resolved against the page, in order of appearance.
fn asset_references(html: &str, page: &Url) -> Vec<Url> {
    let mut found: Vec<Url> = Vec::new();
    for value in attribute_values(html, &["src", "href"]) {
        let Ok(url) = page.join(&value) else {
            continue;
        };
        if url.origin() != page.origin() || !url.path().contains("/assets/") {
            continue;
        }
        if !found.contains(&url) {
            found.push(url);
        }
    }
    found
}

/// The values of `name="..."` / `name='...'` attributes in order of appearance, found by a plain scan
/// (good enough for the page we ship; a canary must not need an HTML parser to tell that a script tag
/// is missing).
fn attribute_values(html: &str, names: &[&str]) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut found: Vec<(usize, String)> = Vec::new();
    for name in names {
        let needle = format!("{name}=");
        let mut from = 0;
        while let Some(offset) = lower[from..].find(&needle) {
            let at = from + offset;
            from = at + needle.len();
            // An attribute name starts after whitespace, so `data-src=` is not `src=`.
            let preceded_by_space = at > 0 && bytes[at - 1].is_ascii_whitespace();
            let Some(&quote) = bytes.get(from) else {
                break;
            };
            if !preceded_by_space || !matches!(quote, b'"' | b'\'') {
                continue;
            }
            let start = from + 1;
            if let Some(len) = lower[start..].find(quote as char) {
                // Slice the original text (ASCII lowercasing keeps byte offsets).
                found.push((at, html[start..start + len].trim().to_owned()));
                from = start + len + 1;
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, value)| value).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PAGE: &str = r#"<!doctype html><html><head>
        <link rel="icon" href="/favicon.svg" type="image/svg+xml">
        <link rel="stylesheet" href="/assets/app.css">
        <script type="module" SRC='/assets/app.js'></script>
        <img data-src="/assets/lazy.png"><a href="https://cdn.example.com/assets/x.js">x</a>
        </head></html>"#;

    #[test]
    fn references_are_same_origin_assets_in_page_order() {
        let page = Url::parse("http://127.0.0.1:8080/").unwrap();
        let found: Vec<String> = asset_references(PAGE, &page)
            .iter()
            .map(|u| u.path().to_owned())
            .collect();
        assert_eq!(found, ["/assets/app.css", "/assets/app.js"]);
    }

    #[test]
    fn references_resolve_against_the_page_like_a_browser() {
        let page = Url::parse("https://api.example.com/prod/").unwrap();
        let found = asset_references(PAGE, &page);
        assert_eq!(found[0].as_str(), "https://api.example.com/assets/app.css");
        let relative = asset_references(r#"<html><script src="assets/app.js">"#, &page);
        assert_eq!(
            relative[0].as_str(),
            "https://api.example.com/prod/assets/app.js"
        );
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(
            expected_types("/assets/app.js"),
            Some(&["text/javascript", "application/javascript"][..])
        );
        assert_eq!(expected_types("/assets/app.css"), Some(&["text/css"][..]));
        assert_eq!(expected_types("/assets/blob"), None);
    }
}
