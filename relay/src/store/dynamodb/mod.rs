//! The DynamoDB store (`--store dynamodb:TABLE`): the relay's store on AWS, one table in the design of
//! [`schema`], reached through aws-sdk-dynamodb with timeouts and bounded, jittered retries.
//!
//! How it keeps the `Store` contract:
//! - the message count is a sharded counter ([`schema::COUNTER_SHARDS`] items, raised per table with
//!   `relay count-shards`, see [`shards`]), changed in the same `TransactWriteItems` as the create or
//!   delete it counts, and read with one `BatchGetItem` per 100 shards, eventually consistent for
//!   `GET /messages` (8 read units where a strong read costs 16; the count may miss the writes of
//!   the last moment) and strongly consistent for the `/app` page, whose count must agree with its
//!   timestamps;
//! - a create never overwrites (`attribute_not_exists`), and a delete is conditional on the revision it
//!   read, so of concurrent deletes of one message exactly one commits and counts it down;
//! - reads compare the exact expiry (µs), so an expired message is never returned, whether or not it
//!   is still in the table; the sweeper ([`sweep`]) removes and uncounts expired messages through the
//!   sparse expiry index, well before DynamoDB TTL (the safety net) would.
//!
//! Must never: Scan (every access is by key, a Query on one partition, or a batch of keys); retry
//! without bound; let a conditional-check failure escape as anything but `NotFound`,
//! `PreconditionFailed` or an idempotent replay.

mod attempts;
mod client;
pub mod schema;
mod shards;
mod sweep;
mod table;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};

pub use self::attempts::TARGET as ATTEMPTS_TARGET;
pub use self::client::{TableCreated, connect, create_table};
use self::schema::{
    Counter, EXPIRES_AT, EXPIRES_AT_US, EXPIRY_BUCKET, FORGET_AT_US, Item, MESSAGE_BODY,
    MESSAGE_REVISION, PK, TTL_AT, UPDATED_AT_US, expiry_attributes, idempotency_item,
    idempotency_key, log_item, log_position, message_from_item, message_item, message_key, micros,
    n, ping_key, replayed_from_item, s, saved_from_item, saved_item, saved_key,
};
pub use self::schema::{TABLE, TableDefinition, table_definition};
use self::table::{CONTENTION_RETRIES, Read, Table};
use super::{Backend, Created, Store, StoreError, StoreResult};
use crate::domain::{
    IdempotencyKey, LogCursor, LogPage, Message, MessageId, MessageUpdate, PageLimit, Precondition,
    SavedValue,
};

/// `IN` takes at most 100 operands.
const MAX_IN_OPERANDS: usize = 100;

/// The DynamoDB store. Cheap to clone (the SDK client is reference-counted).
#[derive(Clone)]
pub struct DynamoStore {
    table: Table,
}

impl DynamoStore {
    /// A store on `table`, with `endpoint` (or `AWS_ENDPOINT_URL`) overriding DynamoDB's for a local
    /// server. Makes no call: a store that is down at start-up is treated like one that goes down later
    /// (503s and a red `/readyz` until it answers).
    pub async fn connect(table: &str, endpoint: Option<&str>) -> StoreResult<Self> {
        Ok(Self::with_client(connect(endpoint).await?, table))
    }

    /// A store over an already configured client.
    pub fn with_client(client: Client, table: &str) -> Self {
        Self {
            table: Table {
                client,
                name: Arc::from(table),
                shards: Arc::default(),
            },
        }
    }

    /// Raise the number of shards every counter of this table has to `shards` (see `shards.rs`), or
    /// say why not: more than [`schema::MAX_COUNTER_SHARDS`], or a counter that already has more
    /// (shard counts are never lowered).
    pub async fn raise_counter_shards(&self, shards: usize) -> StoreResult<Result<(), String>> {
        if !(schema::COUNTER_SHARDS..=schema::MAX_COUNTER_SHARDS).contains(&shards) {
            return Ok(Err(format!(
                "a counter has {} to {} shards",
                schema::COUNTER_SHARDS,
                schema::MAX_COUNTER_SHARDS
            )));
        }
        Ok(self.table.raise_shards(shards).await?.map_err(|now| {
            format!(
                "the counters already have {now} shards; shard counts are only raised \
                 (lowering needs each dropped shard folded into a kept one first)"
            )
        }))
    }

    /// The shard count this process uses for the message counter (what it has learned so far).
    pub fn known_counter_shards(&self) -> usize {
        self.table.shards.known(schema::Counter::Messages)
    }

    pub fn client(&self) -> &Client {
        &self.table.client
    }

    pub fn table(&self) -> &str {
        &self.table.name
    }

    /// Create this store's table (see [`create_table`]).
    pub async fn create_table(&self) -> StoreResult<TableCreated> {
        create_table(&self.table.client, &self.table.name).await
    }
}

/// Whether `item` is `message` as stored (a create's own write, seen by its retry).
fn is_stored(message: &Message, item: Option<&Item>) -> bool {
    item.is_some_and(|item| message_from_item(message.id, item).is_ok_and(|m| m == *message))
}

#[async_trait]
impl Store for DynamoStore {
    fn backend(&self) -> Backend {
        Backend::Dynamodb
    }

    async fn create_message(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Created> {
        let op = "create_message";
        let created_us = micros(message.created_at);
        let mut items = vec![
            self.table.put(
                message_item(message),
                &format!("attribute_not_exists({PK})"),
                vec![],
            )?,
            self.table.count(Counter::Messages, 1).await?,
        ];
        const RECORD: usize = 2;
        if let Some(key) = idempotency {
            // The key may be reused once its record is forgotten, even before DynamoDB TTL removed it.
            items.push(self.table.put(
                idempotency_item(key, message),
                &format!("attribute_not_exists({PK}) OR {FORGET_AT_US} <= :created"),
                vec![(":created", n(created_us))],
            )?);
        }
        for _ in 0..=CONTENTION_RETRIES {
            let cancelled = match self.table.transact(op, items.clone()).await? {
                Ok(()) => return Ok(Created::New),
                Err(cancelled) => cancelled,
            };
            if cancelled.condition_failed(0) && is_stored(message, cancelled.old_item(0)) {
                // Each create makes a fresh id, so an item with this one, equal to this message, is
                // this call's own: an earlier attempt committed and its answer was lost (a timeout).
                // DynamoDB answers such a retry with success by the client request token the SDK
                // sends; a server that ignores the token cancels it instead.
                return Ok(Created::New);
            }
            if let (Some(key), true) = (idempotency, cancelled.condition_failed(RECORD)) {
                // The key was used within its retention: nothing was written; replay the first message.
                let record = match cancelled.old_item(RECORD) {
                    Some(item) => Some(item.clone()),
                    None => {
                        self.table
                            .get_item(op, idempotency_key(key), Read::Strong)
                            .await?
                    }
                };
                if let Some(first) = record
                    .map(|item| replayed_from_item(&item, message.created_at))
                    .transpose()?
                    .flatten()
                {
                    return Ok(Created::Replayed(first));
                }
                // The record was forgotten between the write and the read: write again.
                continue;
            }
            if cancelled.condition_failed(0) {
                return Err(StoreError::Internal(format!(
                    "message id {} already exists",
                    message.id
                )));
            }
            return Err(cancelled.unexpected(op));
        }
        Err(StoreError::Busy(format!(
            "{op}: the idempotency record kept changing"
        )))
    }

    async fn get_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Option<Message>> {
        // Strongly consistent: a client that just created a message must be able to read it.
        Ok(self
            .table
            .stored_message("get_message", id)
            .await?
            .filter(|m| !m.is_expired_at(now)))
    }

    async fn update_message(
        &self,
        update: &MessageUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Message> {
        let op = "update_message";
        let mut revisions: Option<Vec<u64>> = match &update.precondition {
            Precondition::None | Precondition::Exists => None,
            Precondition::RevisionIn(list) => {
                let mut list: Vec<u64> = list.iter().map(|r| r.0).collect();
                list.sort_unstable();
                list.dedup();
                Some(list)
            }
        };
        if revisions
            .as_ref()
            .is_some_and(|list| list.is_empty() || list.len() > MAX_IN_OPERANDS)
        {
            // `IN` takes 1 to 100 operands: check such a precondition against a fresh read, then
            // write on the condition that the revision is still the one read.
            let current = self
                .table
                .stored_message(op, update.id)
                .await?
                .filter(|m| !m.is_expired_at(now))
                .ok_or(StoreError::NotFound)?;
            if !update.precondition.admits(current.revision) {
                return Err(StoreError::PreconditionFailed);
            }
            revisions = Some(vec![current.revision.0]);
        }

        let now_us = micros(now);
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":body".to_owned(), s(update.body.as_str())),
            (":now".to_owned(), n(now_us)),
            (":one".to_owned(), n(1)),
        ]);
        let mut set = vec![
            format!("{MESSAGE_BODY} = :body"),
            format!("{UPDATED_AT_US} = :now"),
        ];
        let mut expression = String::new();
        match update.ttl {
            Some(ttl) => {
                for (name, value) in expiry_attributes(update.id, ttl.expiry_from(now)) {
                    set.push(format!("{name} = :{name}"));
                    values.insert(format!(":{name}"), value);
                }
            }
            None => {
                expression =
                    format!(" REMOVE {EXPIRES_AT_US}, {EXPIRES_AT}, {EXPIRY_BUCKET}, {TTL_AT}");
            }
        }
        let expression = format!(
            "SET {} ADD {MESSAGE_REVISION} :one{expression}",
            set.join(", ")
        );
        let mut condition = format!(
            "attribute_exists({PK}) AND (attribute_not_exists({EXPIRES_AT_US}) OR {EXPIRES_AT_US} > :now)"
        );
        if let Some(list) = revisions {
            let names: Vec<String> = (0..list.len()).map(|i| format!(":rev{i}")).collect();
            condition.push_str(&format!(
                " AND {MESSAGE_REVISION} IN ({})",
                names.join(", ")
            ));
            for (name, revision) in names.into_iter().zip(list) {
                values.insert(name, n(i64::try_from(revision).unwrap_or(i64::MAX)));
            }
        }
        let result = self
            .table
            .client
            .update_item()
            .table_name(self.table.name.as_ref())
            .set_key(Some(message_key(update.id)))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(item) => message_from_item(update.id, item),
                None => Err(StoreError::Internal(format!(
                    "{op}: DynamoDB returned no attributes"
                ))),
            },
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Absent, expired, or another revision: a read tells which.
                match self.get_message(update.id, now).await? {
                    None => Err(StoreError::NotFound),
                    Some(_) => Err(StoreError::PreconditionFailed),
                }
            }
            Err(error) => Err(self.table.error(op, error)),
        }
    }

    async fn delete_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Message> {
        let op = "delete_message";
        for _ in 0..=CONTENTION_RETRIES {
            // A transaction cannot return the deleted item: read it, then delete exactly the revision
            // read. Of concurrent deletes only one can meet that condition, so the count goes down once.
            let current = self
                .table
                .stored_message(op, id)
                .await?
                .ok_or(StoreError::NotFound)?;
            let revision = i64::try_from(current.revision.0).unwrap_or(i64::MAX);
            let items = vec![
                self.table.delete(
                    message_key(id),
                    &format!("{MESSAGE_REVISION} = :rev"),
                    vec![(":rev", n(revision))],
                )?,
                self.table.count(Counter::Messages, -1).await?,
            ];
            match self.table.transact(op, items).await? {
                // An expired message is gone for the caller: it is removed (and uncounted) all the
                // same, but the answer is 404, as for a read.
                Ok(()) if current.is_expired_at(now) => return Err(StoreError::NotFound),
                Ok(()) => return Ok(current),
                // Updated or deleted meanwhile: read again.
                Err(cancelled) if cancelled.condition_failed(0) => continue,
                Err(cancelled) => {
                    return Err(cancelled.unexpected(op));
                }
            }
        }
        Err(StoreError::Busy(format!(
            "{op}: the message kept changing while being deleted"
        )))
    }

    async fn count_messages(&self) -> StoreResult<u64> {
        self.table
            .read_counter("count_messages", Counter::Messages, Read::Eventual)
            .await
    }

    async fn sweep_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        sweep::sweep_expired(&self.table, now, limit).await
    }

    async fn append_timestamp(&self, at: DateTime<Utc>) -> StoreResult<()> {
        let op = "append_timestamp";
        for _ in 0..=CONTENTION_RETRIES {
            let items = vec![
                self.table.put(
                    log_item(log_position(at), at),
                    &format!("attribute_not_exists({PK})"),
                    vec![],
                )?,
                self.table.count(Counter::Log, 1).await?,
            ];
            match self.table.transact(op, items).await? {
                Ok(()) => return Ok(()),
                // Another entry took this position (same microsecond, same draw): draw again.
                Err(cancelled) if cancelled.condition_failed(0) => continue,
                Err(cancelled) => {
                    return Err(cancelled.unexpected(op));
                }
            }
        }
        Err(StoreError::Busy(format!(
            "{op}: no free log position after {} draws",
            CONTENTION_RETRIES + 1
        )))
    }

    async fn list_timestamps(
        &self,
        limit: PageLimit,
        cursor: Option<LogCursor>,
    ) -> StoreResult<LogPage> {
        let limit = limit.get() as usize;
        // One more than a page tells whether there is a next page.
        let (total, mut entries) = tokio::try_join!(
            self.table
                .read_counter("list_timestamps", Counter::Log, Read::Strong),
            self.table.read_log(limit + 1, cursor),
        )?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = entries
            .last()
            .filter(|_| more)
            .map(|(position, _)| LogCursor::new(*position));
        Ok(LogPage {
            total,
            timestamps: entries.into_iter().map(|(_, at)| at).collect(),
            next,
        })
    }

    async fn get_saved(&self) -> StoreResult<Option<SavedValue>> {
        self.table
            .get_item("get_saved", saved_key(), Read::Strong)
            .await?
            .map(|item| saved_from_item(&item))
            .transpose()
    }

    async fn put_saved(&self, value: &SavedValue) -> StoreResult<()> {
        self.table
            .client
            .put_item()
            .table_name(self.table.name.as_ref())
            .set_item(Some(saved_item(value)))
            .send()
            .await
            .map_err(|e| self.table.error("put_saved", e))?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        // A GetItem of a key never written: half a read unit, and the only permission it needs is the
        // one the relay has anyway (DescribeTable would need its own).
        self.table
            .get_item("ping", ping_key(), Read::Eventual)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {

    /// "No request path may Scan": the simplest proof is that no code here can issue one.
    #[test]
    fn nothing_in_this_backend_can_scan() {
        let scan_call = concat!(".sc", "an()");
        for (file, source) in [
            ("mod.rs", include_str!("mod.rs")),
            ("sweep.rs", include_str!("sweep.rs")),
            ("client.rs", include_str!("client.rs")),
            ("schema.rs", include_str!("schema.rs")),
            ("table.rs", include_str!("table.rs")),
        ] {
            assert!(!source.contains(scan_call), "{file} issues a Scan");
        }
    }
}
