//! The API round trip: create a message with a short TTL and a canary marker, read it back and compare,
//! read the count (once more after a pause if it is 0), delete it. If any step after the create
//! fails, the probe still tries the delete, and the 60 s TTL removes the message even if that fails
//! too: a canary must never leave data behind.
//!
//! It must never check that a read after the delete is 404: with several relay instances each holding
//! a read cache, another instance may serve the deleted message for up to its cache TTL (see README,
//! "Storage and counting"). That is documented behaviour, and a canary that pages on it would be wrong.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde::Deserialize;
use serde_json::json;

use super::http::{Fetched, Session, header_str};
use crate::outcome::Failure;
use crate::text::one_line;

/// Long enough for the round trip under any budget, short enough that a leaked message goes quickly.
pub const TTL_SECONDS: i64 = 60;

/// A count read just after the create may not include it yet (on DynamoDB the relay reads the count
/// eventually consistent: README, "Storage and counting"), so a count of 0 is read once more after
/// this pause before it fails the probe.
pub const COUNT_SETTLE: Duration = Duration::from_millis(500);

/// How canary messages start, so people (and log queries) can tell them from real traffic.
pub const MARKER: &str = "relayops-canary";

#[derive(Debug, Deserialize)]
struct MessageResource {
    id: String,
    message: String,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Count {
    count: u64,
}

/// `GET /messages` and its count.
async fn read_count(session: &mut Session<'_>) -> Result<(Fetched, Count), Failure> {
    let counted = session.get("/messages").await?;
    counted.expect_status(StatusCode::OK)?;
    counted.expect_content_type(&["application/json"])?;
    let count = counted.json("a count {\"count\": n}")?;
    Ok((counted, count))
}

pub async fn check(session: &mut Session<'_>) -> Result<String, Failure> {
    let text = format!(
        "{MARKER} {} {}",
        session.request_id(),
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let created = session
        .post_json(
            "/messages",
            &json!({ "message": text, "ttl_seconds": TTL_SECONDS }),
        )
        .await?;
    created.expect_status(StatusCode::CREATED)?;
    created.expect_content_type(&["application/json"])?;
    let message: MessageResource =
        created.json("a message resource {\"id\": ..., \"message\": ...}")?;
    let id = uuid::Uuid::parse_str(&message.id).map_err(|_| {
        created.body_failure(format!(
            "the id \"{}\" is not a UUID",
            one_line(&message.id, 60)
        ))
    })?;
    let path = format!("/messages/{id}");

    let outcome = async {
        if message.message != text {
            return Err(created.mismatch(format!(
                "the created message reads \"{}\", not what was sent",
                one_line(&message.message, 80)
            )));
        }
        if message.expires_at.is_none() {
            return Err(created.mismatch(format!(
                "no expires_at although ttl_seconds was {TTL_SECONDS}"
            )));
        }
        match header_str(&created.headers, LOCATION.as_str()) {
            Some(location) if location.ends_with(&path) => {}
            other => {
                return Err(created.mismatch(format!(
                    "Location is {}, expected …{path}",
                    other.map_or("missing".to_owned(), |l| one_line(l, 120))
                )));
            }
        }

        let read = session.get(&path).await?;
        read.expect_status(StatusCode::OK)?;
        read.expect_content_type(&["application/json"])?;
        let back: MessageResource = read.json("a message resource")?;
        if back.id != message.id || back.message != text {
            return Err(read.mismatch(format!(
                "read back id {} and message \"{}\", not what was created",
                one_line(&back.id, 60),
                one_line(&back.message, 80)
            )));
        }

        let (mut counted, mut count) = read_count(session).await?;
        if count.count == 0 {
            tokio::time::sleep(COUNT_SETTLE).await;
            (counted, count) = read_count(session).await?;
        }
        if count.count == 0 {
            return Err(counted.mismatch(format!(
                "the count is 0 while the canary's message exists (read twice, {} ms apart)",
                COUNT_SETTLE.as_millis()
            )));
        }

        let deleted = session.delete(&path).await?;
        deleted.expect_status(StatusCode::NO_CONTENT)?;
        Ok(count.count)
    }
    .await;

    match outcome {
        Ok(count) => Ok(format!("created, read back, counted ({count}), deleted")),
        Err(failure) => {
            // Best effort: the failure above is what the report must show, whatever this answers.
            // (Harmless when the failure was the delete itself: that answers 404 or fails again.)
            let _ = session.delete(&path).await;
            Err(failure)
        }
    }
}
