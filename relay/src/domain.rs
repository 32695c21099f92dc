//! Domain types: every value that crosses the HTTP boundary is parsed into one of these once
//! ("parse, don't validate"), so handlers and stores never see an unchecked id, body or TTL.
//! Nothing here does I/O.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The largest message the relay will ever accept, whatever the configuration says: a DynamoDB item
/// holds at most 400 KB, and the message shares its item with its id, timestamps and attribute names.
pub const MESSAGE_BYTES_CEILING: usize = 350 * 1024;

/// The longest time-to-live a message may ask for: one year.
pub const MAX_TTL_SECONDS: u32 = 365 * 24 * 60 * 60;

/// The current time, truncated to microseconds: the precision every store keeps, so a message read back
/// is equal to the message written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A message id: a UUID (the relay creates v7, so ids sort by creation time; any version is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }
}

/// Why a string is not a message id.
#[derive(Debug, thiserror::Error)]
#[error("message ids are UUIDs such as 0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b")]
pub struct MalformedId;

impl FromStr for MessageId {
    type Err = MalformedId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the hyphenated form: one canonical spelling per id keeps URLs and cache keys unique.
        if s.len() != 36 {
            return Err(MalformedId);
        }
        Uuid::try_parse(s).map(Self).map_err(|_| MalformedId)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The text of a message: non-empty and within the configured size limit.
///
/// Held as an `Arc<str>` built by copying, never the buffer a request extractor handed over, so that a
/// cached or stored message costs its own size and not the size of the request it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(Arc<str>);

/// Why a text is not a valid message body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the message must not be empty")]
    Empty,
    #[error("the message is {len} bytes; the limit is {max} bytes")]
    TooLarge { len: usize, max: usize },
}

impl MessageBody {
    pub fn parse(text: &str, max_bytes: usize) -> Result<Self, BodyError> {
        if text.is_empty() {
            return Err(BodyError::Empty);
        }
        if text.len() > max_bytes {
            return Err(BodyError::TooLarge {
                len: text.len(),
                max: max_bytes,
            });
        }
        Ok(Self(Arc::from(text)))
    }

    /// Rebuild a body that a store wrote earlier (already validated when it was accepted).
    pub fn from_stored(text: &str) -> Self {
        Self(Arc::from(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A time-to-live in whole seconds, 1 ..= [`MAX_TTL_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(u32);

/// Why a number is not a valid time-to-live.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the time-to-live must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}, got {0}")]
pub struct TtlError(pub i64);

impl Ttl {
    pub fn parse(seconds: i64) -> Result<Self, TtlError> {
        u32::try_from(seconds)
            .ok()
            .filter(|s| (1..=MAX_TTL_SECONDS).contains(s))
            .map(Self)
            .ok_or(TtlError(seconds))
    }

    pub fn seconds(self) -> u32 {
        self.0
    }

    pub fn expiry_from(self, start: DateTime<Utc>) -> DateTime<Utc> {
        start + TimeDelta::seconds(i64::from(self.0))
    }
}

/// A message's revision: 1 when created, +1 on every update. Its strong `ETag` is `"<revision>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision(pub u64);

impl Revision {
    pub const FIRST: Revision = Revision(1);

    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    pub fn etag(self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub body: MessageBody,
    pub created_at: DateTime<Utc>,
    /// When the body or expiry last changed (equal to `created_at` until the first update).
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revision: Revision,
}

impl Message {
    /// A new message, created now.
    pub fn new(body: MessageBody, ttl: Option<Ttl>) -> Self {
        let created_at = now();
        Self {
            id: MessageId::generate(),
            body,
            created_at,
            updated_at: created_at,
            expires_at: ttl.map(|ttl| ttl.expiry_from(created_at)),
            revision: Revision::FIRST,
        }
    }

    /// Expired messages are never returned, even before a store physically removes them.
    pub fn is_expired_at(&self, at: DateTime<Utc>) -> bool {
        self.is_expired_by(|| at)
    }

    /// `is_expired_at`, asking `clock` for the time only if the message can expire at all.
    pub fn is_expired_by(&self, clock: impl FnOnce() -> DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|expiry| expiry <= clock())
    }

    /// The time-to-live the message was created (or last updated) with.
    pub fn ttl_seconds(&self) -> Option<i64> {
        self.expires_at
            .map(|expiry| (expiry - self.updated_at).num_seconds())
    }
}

/// What an update asks for: a new body and expiry, applied only if the precondition holds.
#[derive(Debug, Clone)]
pub struct MessageUpdate {
    pub id: MessageId,
    pub body: MessageBody,
    /// Measured from the time of the update, not of the creation.
    pub ttl: Option<Ttl>,
    pub precondition: Precondition,
}

/// An `If-Match` precondition (RFC 9110 §13.1.1, strong comparison).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No `If-Match`: update unconditionally.
    None,
    /// `If-Match: *`: the message must exist.
    Exists,
    /// `If-Match: "3", "4"`: the current revision must be one of these.
    RevisionIn(Vec<Revision>),
}

impl Precondition {
    /// Parse an `If-Match` value (RFC 9110 §13.1.1): `*`, or a list of entity tags. Tags that are not ours
    /// (weak ones, or not a revision) can never match, which RFC 9110 answers with 412, so they are
    /// dropped from the list; a value that is not entity-tag syntax at all is an error (400): most often a
    /// tag sent without its quotes, which deserves a clear answer rather than a puzzling 412.
    pub fn from_if_match(value: Option<&str>) -> Result<Self, MalformedIfMatch> {
        let Some(value) = value else {
            return Ok(Self::None);
        };
        if value.trim_matches([' ', '\t']) == "*" {
            return Ok(Self::Exists);
        }
        let revisions = entity_tags(value)
            .ok_or(MalformedIfMatch)?
            .into_iter()
            .filter(|tag| !tag.weak)
            .filter_map(|tag| tag.opaque.parse::<u64>().ok().map(Revision))
            .collect();
        Ok(Self::RevisionIn(revisions))
    }

    pub fn admits(&self, current: Revision) -> bool {
        match self {
            Self::None | Self::Exists => true,
            Self::RevisionIn(revisions) => revisions.contains(&current),
        }
    }
}

/// One entity tag of a list: `W/"x"` is weak, `"x"` strong; `opaque` is what is between the quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    pub weak: bool,
    pub opaque: &'a str,
}

/// The entity tags of an `If-Match` or `If-None-Match` list (RFC 9110 §8.8.3: `1#entity-tag`, each
/// `[W/] DQUOTE *etagc DQUOTE`, where etagc is `%x21 / %x23-7E`: a comma inside the quotes is part of
/// the tag), or `None` if the value is not such a list. Empty list elements are allowed, as §5.6.1
/// says a recipient must.
pub fn entity_tags(value: &str) -> Option<Vec<EntityTag<'_>>> {
    let is_ows = |b: u8| b == b' ' || b == b'\t';
    let bytes = value.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && (is_ows(bytes[i]) || bytes[i] == b',') {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let weak = value[i..].starts_with("W/");
        if weak {
            i += 2;
        }
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let start = i + 1;
        let len = bytes[start..].iter().position(|&b| b == b'"')?;
        let opaque = &value[start..start + len];
        if !opaque
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
        {
            return None;
        }
        tags.push(EntityTag { weak, opaque });
        i = start + len + 1;
        while i < bytes.len() && is_ows(bytes[i]) {
            i += 1;
        }
        if i < bytes.len() && bytes[i] != b',' {
            return None;
        }
    }
    (!tags.is_empty()).then_some(tags)
}

/// Why a header value is not an `If-Match` list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "If-Match must be `*` or entity tags in double quotes, such as \"3\" (the ETag header's value)"
)]
pub struct MalformedIfMatch;

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a header value is not an idempotency key.
#[derive(Debug, thiserror::Error)]
#[error("an Idempotency-Key is 1 to 255 visible ASCII characters")]
pub struct IdempotencyKeyError;

impl IdempotencyKey {
    /// How long a key is remembered: a retry after this creates a new message.
    pub const RETENTION: TimeDelta = TimeDelta::hours(24);

    pub fn parse(value: &str) -> Result<Self, IdempotencyKeyError> {
        let ok = (1..=255).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(IdempotencyKeyError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The saved string shown by `GET /saved`: at most [`SavedValue::MAX_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedValue(String);

/// Why a text is not a valid saved string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the saved string is {0} bytes; the limit is {max} bytes", max = SavedValue::MAX_BYTES)]
pub struct SavedValueTooLarge(pub usize);

impl SavedValue {
    pub const MAX_BYTES: usize = 4096;

    pub fn parse(text: &str) -> Result<Self, SavedValueTooLarge> {
        if text.len() > Self::MAX_BYTES {
            return Err(SavedValueTooLarge(text.len()));
        }
        Ok(Self(text.to_owned()))
    }

    /// The value shown before anyone has saved one.
    pub fn default_value() -> Self {
        Self("dynamic string".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque position in the `/app` timestamp log, handed out as `next_cursor` and taken back as `cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor(u64);

/// Why a string is not a cursor this relay handed out.
#[derive(Debug, thiserror::Error)]
#[error("the cursor is not one this relay handed out")]
pub struct MalformedCursor;

impl LogCursor {
    pub fn new(position: u64) -> Self {
        Self(position)
    }

    pub fn position(self) -> u64 {
        self.0
    }
}

impl FromStr for LogCursor {
    type Err = MalformedCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix('c')
            .and_then(|n| n.parse::<u64>().ok())
            .map(Self)
            .ok_or(MalformedCursor)
    }
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// One page of the timestamp log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    pub total: u64,
    pub timestamps: Vec<DateTime<Utc>>,
    pub next: Option<LogCursor>,
}

/// How many timestamps one `GET /app` page may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u32);

/// Why a number is not a page size.
#[derive(Debug, thiserror::Error)]
#[error("limit must be from 1 to {max}", max = PageLimit::MAX)]
pub struct PageLimitError;

impl PageLimit {
    pub const MAX: u32 = 1000;
    pub const DEFAULT: PageLimit = PageLimit(50);

    pub fn parse(n: i64) -> Result<Self, PageLimitError> {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=Self::MAX).contains(n))
            .map(Self)
            .ok_or(PageLimitError)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_parse_only_hyphenated_uuids() {
        let id = MessageId::generate();
        assert_eq!(id.to_string().parse::<MessageId>().ok(), Some(id));
        assert!("not-a-uuid".parse::<MessageId>().is_err());
        assert!(
            id.as_uuid()
                .simple()
                .to_string()
                .parse::<MessageId>()
                .is_err()
        );
        assert!("".parse::<MessageId>().is_err());
    }

    #[test]
    fn bodies_must_be_non_empty_and_within_the_limit() {
        assert_eq!(MessageBody::parse("", 10), Err(BodyError::Empty));
        assert_eq!(
            MessageBody::parse("hello world", 5),
            Err(BodyError::TooLarge { len: 11, max: 5 })
        );
        assert_eq!(MessageBody::parse("hello", 5).map(|b| b.len()), Ok(5));
    }

    #[test]
    fn ttl_accepts_one_second_to_one_year() {
        assert!(Ttl::parse(0).is_err());
        assert!(Ttl::parse(-5).is_err());
        assert!(Ttl::parse(i64::from(MAX_TTL_SECONDS) + 1).is_err());
        assert_eq!(Ttl::parse(60).map(Ttl::seconds), Ok(60));
    }

    #[test]
    fn if_match_parses_star_lists_and_foreign_tags() {
        assert_eq!(Precondition::from_if_match(None), Ok(Precondition::None));
        assert_eq!(
            Precondition::from_if_match(Some("3")),
            Err(MalformedIfMatch)
        );
        assert_eq!(
            Precondition::from_if_match(Some("null")),
            Err(MalformedIfMatch)
        );
        assert_eq!(
            Precondition::from_if_match(Some("\"2\", 4")),
            Err(MalformedIfMatch)
        );
        assert_eq!(
            Precondition::from_if_match(Some(" * ")),
            Ok(Precondition::Exists)
        );
        let p = Precondition::from_if_match(Some("\"2\", W/\"3\", \"x\", \"4\""))
            .unwrap_or(Precondition::None);
        assert_eq!(p, Precondition::RevisionIn(vec![Revision(2), Revision(4)]));
        assert!(p.admits(Revision(4)));
        assert!(!p.admits(Revision(3)));
    }

    #[test]
    fn entity_tag_lists_keep_commas_inside_quotes() {
        let tags = entity_tags(" W/\"m[,>;\"\t,\t\"7\" , ,\"a,b\"").unwrap_or_default();
        let opaque: Vec<_> = tags.iter().map(|t| (t.weak, t.opaque)).collect();
        assert_eq!(opaque, [(true, "m[,>;"), (false, "7"), (false, "a,b")]);
        for malformed in [
            "",
            ",",
            "7",
            "\"7",
            "\"7\" x",
            "W/7",
            "\"a\"\"b\"",
            "\"\u{e9}\"",
        ] {
            assert_eq!(entity_tags(malformed), None, "{malformed:?}");
        }
        assert_eq!(
            Precondition::from_if_match(Some("\"x,2\", \"2\"")),
            Ok(Precondition::RevisionIn(vec![Revision(2)]))
        );
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::parse("order-42").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_foreign_text() {
        let c = LogCursor::new(42);
        assert_eq!(c.to_string().parse::<LogCursor>().ok(), Some(c));
        assert!("42".parse::<LogCursor>().is_err());
        assert!("c-1".parse::<LogCursor>().is_err());
    }

    #[test]
    fn expiry_is_inclusive_of_the_deadline() {
        let m = Message::new(MessageBody::from_stored("x"), Ttl::parse(10).ok());
        let expiry = m.expires_at.unwrap_or_else(now);
        assert!(!m.is_expired_at(expiry - TimeDelta::microseconds(1)));
        assert!(m.is_expired_at(expiry));
        assert_eq!(m.ttl_seconds(), Some(10));
    }
}
