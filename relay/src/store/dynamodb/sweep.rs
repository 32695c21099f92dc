//! Sweeping expired messages out of DynamoDB, and out of the count.
//!
//! DynamoDB TTL deletes items without telling the counter, so the relay does not leave expiry to it.
//! Every message with a TTL sits in the sparse `by_expiry` index under `exp#<hour>#<shard>`, sorted by
//! `expires_at`. A sweep queries those partitions, from the oldest hour that may still hold messages
//! (the watermark, an item of its own) up to now, and deletes each expired message in a transaction
//! that is conditional on the message still being there and still expired, and that counts it down:
//! a message is counted down once, whoever else deletes or updates it meanwhile. The DynamoDB TTL
//! attribute lies a day after the expiry (`TTL_GRACE_SECONDS`), so TTL only ever removes what no relay
//! swept for a day.
//!
//! Must never: Scan; count down a message it did not delete; move the watermark past an hour that may
//! still hold expired messages.

use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use super::schema::{
    Counter, EXPIRES_AT, EXPIRES_AT_US, EXPIRY_BUCKET, EXPIRY_INDEX, EXPIRY_SHARDS, Item, PK, SK,
    SWEEP_FROM_HOUR, expiry_bucket, get_opt_i64, hour_end, hour_of, micros, n, s, sweep_key,
};
use super::table::{Read, Table};
use crate::store::{StoreError, StoreResult};

/// An hour's bucket is only declared empty this long after the hour ended: a relay whose clock runs
/// behind by less than this cannot write a message into a bucket the watermark has passed.
const CLOCK_SKEW_MARGIN_SECONDS: i64 = 300;
/// Deletes in flight at once.
const DELETE_CONCURRENCY: usize = 16;
const OP: &str = "sweep_expired";

pub(super) async fn sweep_expired(
    store: &Table,
    now: DateTime<Utc>,
    limit: usize,
) -> StoreResult<u64> {
    let now_s = now.timestamp();
    let now_us = micros(now);
    let current = hour_of(now_s);
    let stored = watermark(store).await?;
    // No watermark yet: this is the table's first sweep. The sweeper runs as soon as a relay starts,
    // so nothing can have expired long before; the previous hour covers a start just after the hour.
    let from = stored.unwrap_or(current - 1).min(current);

    let mut removed = 0u64;
    let mut failure = None;
    // Every hour before this one is known to hold no expired message.
    let mut drained_to = from;
    let mut contiguous = true;
    for hour in from..=current {
        let budget = limit.saturating_sub(usize::try_from(removed).unwrap_or(usize::MAX));
        if budget == 0 {
            break;
        }
        let (keys, complete) = match expired_in_hour(store, hour, now_s, budget).await {
            Ok(found) => found,
            Err(error) => {
                failure = Some(error);
                break;
            }
        };
        let (deleted, error) = delete_expired(store, keys, now_us).await;
        removed += deleted;
        let drained =
            complete && error.is_none() && hour_end(hour) + CLOCK_SKEW_MARGIN_SECONDS < now_s;
        if contiguous && drained {
            drained_to = hour + 1;
        } else {
            contiguous = false;
        }
        if let Some(error) = error {
            failure = Some(error);
            break;
        }
    }
    if stored.is_none_or(|hour| drained_to > hour)
        && let Err(error) = advance_watermark(store, drained_to).await
    {
        failure.get_or_insert(error);
    }
    match failure {
        // Report a failure only when nothing was achieved: the sweeper retries on its next tick.
        Some(error) if removed == 0 => Err(error),
        _ => Ok(removed),
    }
}

/// The keys of up to `budget` expired messages in `hour`'s buckets, and whether that was all of them.
async fn expired_in_hour(
    store: &Table,
    hour: i64,
    now_s: i64,
    budget: usize,
) -> StoreResult<(Vec<Item>, bool)> {
    let mut keys = Vec::new();
    for shard in 0..EXPIRY_SHARDS {
        let mut start = None;
        loop {
            let remaining = budget - keys.len();
            if remaining == 0 {
                return Ok((keys, false));
            }
            let output = store
                .client
                .query()
                .table_name(store.name.as_ref())
                .index_name(EXPIRY_INDEX)
                .key_condition_expression(format!(
                    "{EXPIRY_BUCKET} = :bucket AND {EXPIRES_AT} <= :now"
                ))
                .expression_attribute_values(":bucket", s(expiry_bucket(hour, shard)))
                .expression_attribute_values(":now", n(now_s))
                .limit(i32::try_from(remaining).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store.error(OP, e))?;
            for item in output.items() {
                let mut key = Item::new();
                for name in [PK, SK] {
                    if let Some(value) = item.get(name) {
                        key.insert(name.to_owned(), value.clone());
                    }
                }
                keys.push(key);
            }
            match output.last_evaluated_key() {
                Some(last) => start = Some(last.clone()),
                None => break,
            }
        }
    }
    Ok((keys, true))
}

/// Delete (and count down) each message that still exists and has expired at `now_us`. Returns how
/// many were deleted, and the first error if any delete failed for a reason other than the message
/// having gone or changed.
async fn delete_expired(store: &Table, keys: Vec<Item>, now_us: i64) -> (u64, Option<StoreError>) {
    let mut deleted = 0;
    let mut failure = None;
    let mut in_flight = JoinSet::new();
    let mut keys = keys.into_iter();
    loop {
        while in_flight.len() < DELETE_CONCURRENCY {
            let Some(key) = keys.next() else { break };
            let store = store.clone();
            in_flight.spawn(async move { delete_one(&store, key, now_us).await });
        }
        let Some(joined) = in_flight.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(true)) => deleted += 1,
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                failure.get_or_insert(error);
            }
            Err(error) => {
                failure.get_or_insert(StoreError::Internal(format!("{OP}: task failed: {error}")));
            }
        }
    }
    (deleted, failure)
}

/// `true` if this call deleted the message; `false` if it was gone, or updated to a later expiry.
async fn delete_one(store: &Table, key: Item, now_us: i64) -> StoreResult<bool> {
    let items = vec![
        store.delete(
            key,
            &format!("attribute_exists({PK}) AND {EXPIRES_AT_US} <= :now"),
            vec![(":now", n(now_us))],
        )?,
        store.count(Counter::Messages, -1).await?,
    ];
    match store.transact(OP, items).await? {
        Ok(()) => Ok(true),
        Err(cancelled) if cancelled.condition_failed(0) => Ok(false),
        Err(cancelled) => Err(cancelled.unexpected(OP)),
    }
}

async fn watermark(store: &Table) -> StoreResult<Option<i64>> {
    match store.get_item(OP, sweep_key(), Read::Strong).await? {
        Some(item) => get_opt_i64(&item, SWEEP_FROM_HOUR),
        None => Ok(None),
    }
}

/// Move the watermark forward (never back: another relay may have moved it further).
async fn advance_watermark(store: &Table, hour: i64) -> StoreResult<()> {
    let result = store
        .client
        .update_item()
        .table_name(store.name.as_ref())
        .set_key(Some(sweep_key()))
        .update_expression(format!("SET {SWEEP_FROM_HOUR} = :hour"))
        .condition_expression(format!(
            "attribute_not_exists({SWEEP_FROM_HOUR}) OR {SWEEP_FROM_HOUR} < :hour"
        ))
        .expression_attribute_values(":hour", n(hour))
        .return_values(ReturnValue::None)
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(store.error(OP, e)),
    }
}
