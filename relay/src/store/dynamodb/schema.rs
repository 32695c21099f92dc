//! The DynamoDB table design, in one place: key schema, index, TTL attribute, billing mode, the item
//! layouts, and the mapping between items and domain values.
//!
//! [`TABLE`] is the single source of the table's definition: `relay create-table` builds the table from
//! it, and the CloudFormation template must declare exactly the same (a test compares the two through
//! [`TableDefinition::cloudformation_properties`]). Change the design here and nowhere else.
//! Must never: do I/O, or name an attribute anywhere but in the consts below.
//!
//! One table holds every kind of item (the usual single-table design), told apart by the key:
//!
//! | item                  | `pk`                        | `sk`                   | other attributes |
//! |-----------------------|-----------------------------|------------------------|------------------|
//! | message               | `msg#<uuid>`                | `msg`                  | body, created/updated/expires µs, revision; with a TTL also `expires_at`, `expiry_bucket`, `ttl_at` |
//! | idempotency record    | `idem#<key>`                | `idem`                 | the first message (id, body, created/expires µs), `forget_at_us`, `ttl_at` |
//! | message counter shard | `count#messages#<00..15>`   | `count`                | `shard_count` |
//! | log counter shard     | `count#log#<00..15>`        | `count`                | `shard_count` |
//! | `/app` log entry      | `log`                       | 20-digit position      | `logged_at_us` |
//! | saved string          | `saved`                     | `saved`                | `saved_value` |
//! | sweep watermark       | `sweep`                     | `sweep`                | `sweep_from_hour` |
//!
//! Every non-key attribute name contains an underscore, so none can collide with a DynamoDB reserved
//! word and no expression needs `#name` placeholders.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::domain::{IdempotencyKey, Message, MessageBody, MessageId, Revision, SavedValue};
use crate::store::{StoreError, StoreResult};

/// An item as the SDK hands it over.
pub type Item = HashMap<String, AttributeValue>;

// ---- the table definition -------------------------------------------------------------------------

/// A key attribute: its name and DynamoDB scalar type (`S` or `N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAttribute {
    pub name: &'static str,
    pub kind: &'static str,
}

/// A global secondary index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexDefinition {
    pub name: &'static str,
    pub partition_key: KeyAttribute,
    pub sort_key: KeyAttribute,
    /// `KEYS_ONLY`, `INCLUDE` or `ALL`.
    pub projection: &'static str,
}

/// Everything about the table except its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDefinition {
    pub partition_key: KeyAttribute,
    pub sort_key: KeyAttribute,
    pub indexes: &'static [IndexDefinition],
    /// The attribute DynamoDB TTL is enabled on.
    pub ttl_attribute: &'static str,
    /// `PAY_PER_REQUEST` (on-demand) or `PROVISIONED`.
    pub billing_mode: &'static str,
}

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// The expiry in whole epoch seconds, rounded up (so `expires_at <= now_s` implies the message has
/// expired): the sort key of the expiry index.
pub const EXPIRES_AT: &str = "expires_at";
/// `exp#<hour since epoch of expires_at>#<shard>`: partition key of the sparse expiry index. Only
/// messages with a TTL carry it, so the index holds exactly the messages that can expire.
pub const EXPIRY_BUCKET: &str = "expiry_bucket";
/// The DynamoDB TTL attribute (epoch seconds). On messages it lies [`TTL_GRACE_SECONDS`] after the
/// expiry, so that the relay's sweeper, not DynamoDB, removes (and uncounts) expired messages.
pub const TTL_AT: &str = "ttl_at";
pub const EXPIRY_INDEX: &str = "by_expiry";

/// The table design. `relay create-table` and the CloudFormation stack both follow it.
pub const TABLE: TableDefinition = TableDefinition {
    partition_key: KeyAttribute {
        name: PK,
        kind: "S",
    },
    sort_key: KeyAttribute {
        name: SK,
        kind: "S",
    },
    indexes: &[IndexDefinition {
        name: EXPIRY_INDEX,
        partition_key: KeyAttribute {
            name: EXPIRY_BUCKET,
            kind: "S",
        },
        sort_key: KeyAttribute {
            name: EXPIRES_AT,
            kind: "N",
        },
        projection: "KEYS_ONLY",
    }],
    ttl_attribute: TTL_AT,
    billing_mode: "PAY_PER_REQUEST",
};

/// The table design (the same as [`TABLE`]).
pub fn table_definition() -> &'static TableDefinition {
    &TABLE
}

impl TableDefinition {
    /// Every attribute that is a key of the table or of an index, each once, in a stable order.
    pub fn attribute_definitions(&self) -> Vec<KeyAttribute> {
        let mut attributes = vec![self.partition_key, self.sort_key];
        for index in self.indexes {
            for key in [index.partition_key, index.sort_key] {
                if !attributes.iter().any(|a| a.name == key.name) {
                    attributes.push(key);
                }
            }
        }
        attributes
    }

    /// The `Properties` of an `AWS::DynamoDB::Table` resource for this design, without `TableName`
    /// and without settings that are the stack's business (tags, backups, encryption).
    pub fn cloudformation_properties(&self) -> Value {
        let key_schema = |pk: KeyAttribute, sk: KeyAttribute| {
            json!([
                {"AttributeName": pk.name, "KeyType": "HASH"},
                {"AttributeName": sk.name, "KeyType": "RANGE"},
            ])
        };
        json!({
            "BillingMode": self.billing_mode,
            "AttributeDefinitions": self.attribute_definitions().iter()
                .map(|a| json!({"AttributeName": a.name, "AttributeType": a.kind}))
                .collect::<Vec<_>>(),
            "KeySchema": key_schema(self.partition_key, self.sort_key),
            "GlobalSecondaryIndexes": self.indexes.iter().map(|index| json!({
                "IndexName": index.name,
                "KeySchema": key_schema(index.partition_key, index.sort_key),
                "Projection": {"ProjectionType": index.projection},
            })).collect::<Vec<_>>(),
            "TimeToLiveSpecification": {"AttributeName": self.ttl_attribute, "Enabled": true},
        })
    }
}

// ---- the other attributes ---------------------------------------------------------------------------

pub const MESSAGE_BODY: &str = "message_body";
pub const CREATED_AT_US: &str = "created_at_us";
pub const UPDATED_AT_US: &str = "updated_at_us";
/// The exact expiry (epoch microseconds): what reads compare with, so a message reads back equal.
pub const EXPIRES_AT_US: &str = "expires_at_us";
pub const MESSAGE_REVISION: &str = "message_revision";
pub const MESSAGE_ID: &str = "message_id";
pub const FORGET_AT_US: &str = "forget_at_us";
pub const SHARD_COUNT: &str = "shard_count";
pub const LOGGED_AT_US: &str = "logged_at_us";
pub const SAVED_VALUE: &str = "saved_value";
pub const SWEEP_FROM_HOUR: &str = "sweep_from_hour";

/// How long after its expiry DynamoDB TTL may delete a message. The sweeper removes expired messages
/// within one sweep interval; DynamoDB TTL is only the safety net for a table no relay sweeps anymore.
/// Until then a message DynamoDB deleted would stay counted, so the grace is generous: a day.
pub const TTL_GRACE_SECONDS: i64 = 24 * 60 * 60;

/// Counter shards: each create/delete adds to one at random, so no single item takes every write.
/// A transactional write costs 2 WCU, so 16 shards sustain 8,000 creates/s before one shard's
/// 1,000 WCU/s partition limit is reached. This is the number a table starts with; `relay count-shards`
/// raises it (see `shards.rs`), up to [`MAX_COUNTER_SHARDS`].
pub const COUNTER_SHARDS: usize = 16;

/// The most shards a counter may have: every count reads each one (half a read unit apiece).
pub const MAX_COUNTER_SHARDS: usize = 1000;

/// On shard 0 of a counter: how many shards readers must sum (absent: [`COUNTER_SHARDS`]).
pub const COUNTER_SHARDS_SET: &str = "counter_shards";

/// Expiry index shards per hour: the index write is 1 WCU (keys only), so 8 shards match the counter.
pub const EXPIRY_SHARDS: u8 = 8;

const SECONDS_PER_HOUR: i64 = 3600;

// ---- keys -------------------------------------------------------------------------------------------

pub fn key(pk: String, sk: &str) -> Item {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk)),
        (SK.to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

pub fn message_key(id: MessageId) -> Item {
    key(format!("msg#{id}"), "msg")
}

pub fn idempotency_key(key_: &IdempotencyKey) -> Item {
    key(format!("idem#{}", key_.as_str()), "idem")
}

pub fn saved_key() -> Item {
    key("saved".to_owned(), "saved")
}

pub fn sweep_key() -> Item {
    key("sweep".to_owned(), "sweep")
}

/// A key that is never written: reading it proves the table answers, at the cost of half a read unit.
pub fn ping_key() -> Item {
    key("ping".to_owned(), "ping")
}

pub const LOG_PK: &str = "log";

/// The sort key of a log entry: its position, zero-padded so string order is numeric order.
pub fn log_sort_key(position: u64) -> String {
    format!("{position:020}")
}

/// A sharded counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Messages,
    Log,
}

impl Counter {
    pub const ALL: [Counter; 2] = [Counter::Messages, Counter::Log];

    /// Its place in [`Counter::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::Messages => 0,
            Self::Log => 1,
        }
    }

    pub fn shard_key(self, shard: usize) -> Item {
        let name = match self {
            Self::Messages => "messages",
            Self::Log => "log",
        };
        key(format!("count#{name}#{shard:02}"), "count")
    }

    /// One of its first `shards` shards, at random.
    pub fn random_shard_key(self, shards: usize) -> Item {
        self.shard_key(fastrand::usize(..shards.max(1)))
    }
}

// ---- time -------------------------------------------------------------------------------------------

pub fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(us: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Internal(format!("stored timestamp {us} is out of range")))
}

/// Whole epoch seconds, rounded up.
pub fn ceil_seconds(at: DateTime<Utc>) -> i64 {
    micros(at).div_euclid(1_000_000) + i64::from(micros(at).rem_euclid(1_000_000) != 0)
}

/// The hour (since the epoch) whose expiry bucket holds an item expiring at `expires_at` seconds.
pub fn expiry_hour(expires_at_seconds: i64) -> i64 {
    expires_at_seconds.div_euclid(SECONDS_PER_HOUR)
}

pub fn expiry_bucket(hour: i64, shard: u8) -> String {
    format!("exp#{hour}#{shard}")
}

/// A message always lands in the same shard of its hour: the last byte of its id picks it.
fn expiry_shard(id: MessageId) -> u8 {
    id.as_uuid().as_bytes()[15] % EXPIRY_SHARDS
}

/// The hour (since the epoch) that holds the epoch second `seconds`.
pub fn hour_of(seconds: i64) -> i64 {
    seconds.div_euclid(SECONDS_PER_HOUR)
}

/// The last second of `hour`.
pub fn hour_end(hour: i64) -> i64 {
    (hour + 1) * SECONDS_PER_HOUR - 1
}

/// The position of a log entry: the microsecond it records, times 1000, plus a random tie-breaker, so
/// positions sort by time and two instances appending in the same microsecond rarely collide (the
/// write is conditional; a collision draws again).
pub fn log_position(at: DateTime<Utc>) -> u64 {
    let us = u64::try_from(micros(at)).unwrap_or(0);
    us.saturating_mul(1000)
        .saturating_add(fastrand::u64(..1000))
}

// ---- attribute values -------------------------------------------------------------------------------

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_s<'a>(item: &'a Item, name: &str) -> StoreResult<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        other => Err(malformed(name, other)),
    }
}

pub fn get_i64(item: &Item, name: &str) -> StoreResult<i64> {
    get_opt_i64(item, name)?.ok_or_else(|| malformed(name, None))
}

pub fn get_opt_i64(item: &Item, name: &str) -> StoreResult<Option<i64>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(value)) => value
            .parse::<i64>()
            .map(Some)
            .map_err(|_| malformed(name, item.get(name))),
        other => Err(malformed(name, other)),
    }
}

fn malformed(name: &str, value: Option<&AttributeValue>) -> StoreError {
    // The value may be a message body: name only its kind, never its contents.
    let kind = match value {
        None => "missing",
        Some(AttributeValue::S(_)) => "a string",
        Some(AttributeValue::N(_)) => "a number",
        Some(_) => "another type",
    };
    StoreError::Internal(format!(
        "item attribute `{name}` is {kind}; the table holds an item this relay did not write"
    ))
}

// ---- messages -----------------------------------------------------------------------------------------

/// The expiry attributes of a message that expires at `expires_at`: exact µs, the index keys, the TTL.
pub fn expiry_attributes(
    id: MessageId,
    expires_at: DateTime<Utc>,
) -> [(&'static str, AttributeValue); 4] {
    let seconds = ceil_seconds(expires_at);
    [
        (EXPIRES_AT_US, n(micros(expires_at))),
        (EXPIRES_AT, n(seconds)),
        (
            EXPIRY_BUCKET,
            s(expiry_bucket(expiry_hour(seconds), expiry_shard(id))),
        ),
        (TTL_AT, n(seconds + TTL_GRACE_SECONDS)),
    ]
}

pub fn message_item(message: &Message) -> Item {
    let mut item = message_key(message.id);
    item.insert(MESSAGE_BODY.into(), s(message.body.as_str()));
    item.insert(CREATED_AT_US.into(), n(micros(message.created_at)));
    item.insert(UPDATED_AT_US.into(), n(micros(message.updated_at)));
    item.insert(
        MESSAGE_REVISION.into(),
        n(i64::try_from(message.revision.0).unwrap_or(i64::MAX)),
    );
    if let Some(expires_at) = message.expires_at {
        for (name, value) in expiry_attributes(message.id, expires_at) {
            item.insert(name.into(), value);
        }
    }
    item
}

pub fn message_from_item(id: MessageId, item: &Item) -> StoreResult<Message> {
    Ok(Message {
        id,
        body: MessageBody::from_stored(get_s(item, MESSAGE_BODY)?),
        created_at: from_micros(get_i64(item, CREATED_AT_US)?)?,
        updated_at: from_micros(get_i64(item, UPDATED_AT_US)?)?,
        expires_at: get_opt_i64(item, EXPIRES_AT_US)?
            .map(from_micros)
            .transpose()?,
        revision: Revision(u64::try_from(get_i64(item, MESSAGE_REVISION)?).unwrap_or(0)),
    })
}

/// The id in a message item's partition key.
pub fn message_id_from_key(item: &Item) -> StoreResult<MessageId> {
    get_s(item, PK)?
        .strip_prefix("msg#")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| StoreError::Internal("a message item has a malformed key".into()))
}

// ---- idempotency records ------------------------------------------------------------------------------

/// A record of the first message created with a key, kept until `forget_at`. Its own DynamoDB TTL
/// removes it after that; reads compare `forget_at_us`, so a record DynamoDB has not removed yet is
/// already forgotten. No counter is involved, so no sweep is needed.
pub fn idempotency_item(key_: &IdempotencyKey, first: &Message) -> Item {
    let forget_at = first.created_at + IdempotencyKey::RETENTION;
    let mut item = idempotency_key(key_);
    item.insert(MESSAGE_ID.into(), s(first.id.to_string()));
    item.insert(MESSAGE_BODY.into(), s(first.body.as_str()));
    item.insert(CREATED_AT_US.into(), n(micros(first.created_at)));
    if let Some(expires_at) = first.expires_at {
        item.insert(EXPIRES_AT_US.into(), n(micros(expires_at)));
    }
    item.insert(FORGET_AT_US.into(), n(micros(forget_at)));
    item.insert(TTL_AT.into(), n(ceil_seconds(forget_at)));
    item
}

/// The first message of an idempotency record, if the record is still remembered at `at`.
pub fn replayed_from_item(item: &Item, at: DateTime<Utc>) -> StoreResult<Option<Message>> {
    if get_i64(item, FORGET_AT_US)? <= micros(at) {
        return Ok(None);
    }
    let id = get_s(item, MESSAGE_ID)?
        .parse()
        .map_err(|_| StoreError::Internal("an idempotency record has a malformed id".into()))?;
    let created_at = from_micros(get_i64(item, CREATED_AT_US)?)?;
    Ok(Some(Message {
        id,
        body: MessageBody::from_stored(get_s(item, MESSAGE_BODY)?),
        created_at,
        updated_at: created_at,
        expires_at: get_opt_i64(item, EXPIRES_AT_US)?
            .map(from_micros)
            .transpose()?,
        revision: Revision::FIRST,
    }))
}

// ---- the log and the saved string -----------------------------------------------------------------------

pub fn log_item(position: u64, at: DateTime<Utc>) -> Item {
    let mut item = key(LOG_PK.to_owned(), &log_sort_key(position));
    item.insert(LOGGED_AT_US.into(), n(micros(at)));
    item
}

/// (position, timestamp) of a log entry.
pub fn log_entry_from_item(item: &Item) -> StoreResult<(u64, DateTime<Utc>)> {
    let position = get_s(item, SK)?
        .parse::<u64>()
        .map_err(|_| StoreError::Internal("a log entry has a malformed sort key".into()))?;
    Ok((position, from_micros(get_i64(item, LOGGED_AT_US)?)?))
}

pub fn saved_item(value: &SavedValue) -> Item {
    let mut item = saved_key();
    item.insert(SAVED_VALUE.into(), s(value.as_str()));
    item
}

pub fn saved_from_item(item: &Item) -> StoreResult<SavedValue> {
    // Written through SavedValue::parse, so within bounds; re-parse rather than trust the table.
    SavedValue::parse(get_s(item, SAVED_VALUE)?).map_err(|e| StoreError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use chrono::TimeDelta;

    use super::*;
    use crate::domain::{Ttl, now};

    #[test]
    fn seconds_round_up_so_an_indexed_expiry_never_precedes_the_real_one() {
        let whole = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(ceil_seconds(whole), 1_700_000_000);
        assert_eq!(
            ceil_seconds(whole + TimeDelta::microseconds(1)),
            1_700_000_001
        );
        assert_eq!(
            ceil_seconds(whole + TimeDelta::microseconds(999_999)),
            1_700_000_001
        );
    }

    #[test]
    fn messages_round_trip_through_items_exactly() {
        for ttl in [None, Ttl::parse(90).ok()] {
            let m = Message::new(MessageBody::from_stored("héllo \"x\""), ttl);
            let item = message_item(&m);
            assert_eq!(message_from_item(m.id, &item).unwrap(), m);
            assert_eq!(message_id_from_key(&item).unwrap(), m.id);
            assert_eq!(
                item.contains_key(EXPIRY_BUCKET),
                ttl.is_some(),
                "sparse index"
            );
        }
    }

    #[test]
    fn the_ttl_attribute_lies_a_grace_period_after_the_expiry() {
        let m = Message::new(MessageBody::from_stored("x"), Ttl::parse(60).ok());
        let item = message_item(&m);
        let expires_at = get_i64(&item, EXPIRES_AT).unwrap();
        assert_eq!(
            get_i64(&item, TTL_AT).unwrap(),
            expires_at + TTL_GRACE_SECONDS
        );
        let bucket = get_s(&item, EXPIRY_BUCKET).unwrap();
        assert!(bucket.starts_with(&format!("exp#{}#", expiry_hour(expires_at))));
    }

    #[test]
    fn idempotency_records_replay_until_forgotten() {
        let key_ = IdempotencyKey::parse("k-1").unwrap();
        let m = Message::new(MessageBody::from_stored("once"), Ttl::parse(5).ok());
        let item = idempotency_item(&key_, &m);
        assert_eq!(replayed_from_item(&item, now()).unwrap(), Some(m.clone()));
        let later = m.created_at + IdempotencyKey::RETENTION;
        assert_eq!(replayed_from_item(&item, later).unwrap(), None);
    }

    #[test]
    fn log_sort_keys_sort_like_positions() {
        let early = log_sort_key(9);
        let late = log_sort_key(10);
        assert!(early < late);
        assert_eq!(late.len(), 20);
        let at = now();
        let p = log_position(at);
        assert_eq!(p / 1000, u64::try_from(micros(at)).unwrap());
        let (pos, back) = log_entry_from_item(&log_item(p, at)).unwrap();
        assert_eq!((pos, back), (p, at));
    }

    #[test]
    fn the_definition_names_each_key_attribute_once() {
        let names: Vec<_> = TABLE
            .attribute_definitions()
            .iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, [PK, SK, EXPIRY_BUCKET, EXPIRES_AT]);
        let cfn = table_definition().cloudformation_properties();
        assert_eq!(cfn["TimeToLiveSpecification"]["AttributeName"], TTL_AT);
        assert_eq!(cfn["BillingMode"], "PAY_PER_REQUEST");
        assert_eq!(cfn["GlobalSecondaryIndexes"][0]["IndexName"], EXPIRY_INDEX);
    }

    #[test]
    fn foreign_items_are_internal_errors_that_never_quote_the_value() {
        let mut item = message_key(MessageId::generate());
        item.insert(MESSAGE_BODY.into(), n(7));
        let err = message_from_item(MessageId::generate(), &item).unwrap_err();
        assert!(
            matches!(err, StoreError::Internal(ref m) if !m.contains('7')),
            "{err:?}"
        );
    }
}
