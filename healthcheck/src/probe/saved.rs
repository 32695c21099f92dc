//! The saved-string probe: `GET /saved` is the `text/html` page whose heading shows the saved string.
//! The value itself is whatever an operator last saved, so the probe checks the page's shape, never
//! the value, and it must never write the saved string.

use reqwest::StatusCode;

use super::http::{Session, quoted_start};
use crate::outcome::Failure;
use crate::text::one_line;

const HEADING: &str = "<h1>The saved string is ";

pub async fn check(session: &mut Session<'_>) -> Result<String, Failure> {
    let response = session.get("/saved").await?;
    response.expect_status(StatusCode::OK)?;
    response.expect_content_type(&["text/html"])?;
    let page = response.text()?;
    let Some(start) = page.find(HEADING) else {
        return Err(response.body_failure(format!(
            "the page has no `{}…</h1>` heading (body starts {})",
            HEADING.trim_end(),
            quoted_start(&response.body)
        )));
    };
    let rest = &page[start + HEADING.len()..];
    let Some(end) = rest.find("</h1>") else {
        return Err(response.body_failure("the saved string heading is not closed".to_owned()));
    };
    Ok(format!("shows \"{}\"", one_line(&rest[..end], 40)))
}
