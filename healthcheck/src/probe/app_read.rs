//! The timestamp-log read probe: `GET /app?limit=1` is a JSON page of at most one timestamp, newest
//! first, consistent with its `count` and `next_cursor`. It must never `POST /app`: the log is
//! append-only, so a probe write could never be cleaned up.

use chrono::DateTime;
use reqwest::StatusCode;
use serde::Deserialize;

use super::http::Session;
use crate::outcome::Failure;
use crate::text::one_line;

#[derive(Debug, Deserialize)]
struct Page {
    count: u64,
    timestamps: Vec<String>,
    #[serde(default)]
    next_cursor: Option<String>,
}

pub async fn check(session: &mut Session<'_>) -> Result<String, Failure> {
    let response = session.get("/app?limit=1").await?;
    response.expect_status(StatusCode::OK)?;
    response.expect_content_type(&["application/json"])?;
    let page: Page = response.json("a timestamp page {\"count\": n, \"timestamps\": [...]}")?;
    let shown = page.timestamps.len() as u64;
    if shown > 1 {
        return Err(response.mismatch(format!("{shown} timestamps for limit=1")));
    }
    if shown != page.count.min(1) {
        return Err(response.mismatch(format!(
            "count is {} but the page holds {shown} timestamps",
            page.count
        )));
    }
    if page.count > shown && page.next_cursor.is_none() {
        return Err(response.mismatch(format!(
            "count is {} but the first page of 1 has no next_cursor",
            page.count
        )));
    }
    match page.timestamps.first() {
        None => Ok("empty log".to_owned()),
        Some(newest) => match DateTime::parse_from_rfc3339(newest) {
            Ok(_) => Ok(format!("{} timestamps, newest {newest}", page.count)),
            Err(e) => Err(response.body_failure(format!(
                "the newest timestamp \"{}\" is not RFC 3339: {e}",
                one_line(newest, 60)
            ))),
        },
    }
}
