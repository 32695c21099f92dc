//! The message service: what `/messages` and `/paste` share. It puts the read-through cache in front of
//! the store, checks idempotent retries, and emits the message events. Handlers only translate HTTP.
//!
//! Cache rules (single instance: never stale; several instances: stale for at most the cache TTL):
//! - entries never outlive the message's own expiry, and expired entries are never served;
//! - an update puts the new revision in the cache; a read never replaces a newer revision with an older one;
//! - a delete leaves a tombstone, so a read racing the delete cannot put the message back;
//! - a create does not fill the cache: only reads do. Measured: when a burst of creates filled it, the
//!   entries all expired together one cache TTL later, and removing them stalled reads (p99 63 ms,
//!   from under 2 ms, in `bench/get-by-id.sh` style runs).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::domain::{IdempotencyKey, Message, MessageBody, MessageId, MessageUpdate, Ttl, now};
use crate::http::error::{ApiError, ApiResult};
use crate::store::{Created, DynStore};
use crate::telemetry::events::{CacheLookup, Event, MessageEvent};

/// A message as the service hands it out: shared with the cache, plus a slot where the HTTP layer keeps
/// its rendered representation, so a cached message is serialized once rather than on every read.
#[derive(Debug)]
pub struct SharedMessage {
    message: Message,
    rendered: OnceLock<Rendered>,
}

/// A message revision as the HTTP layer sends it: the JSON body and the `ETag`, both shared, so a read
/// of a cached message copies and allocates neither.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub json: Bytes,
    pub etag: Bytes,
}

impl SharedMessage {
    fn new(message: Message) -> Arc<Self> {
        Arc::new(Self {
            message,
            rendered: OnceLock::new(),
        })
    }

    /// The representation `render` makes of this message, made at most once.
    pub fn rendered(&self, render: impl FnOnce(&Message) -> Rendered) -> &Rendered {
        self.rendered.get_or_init(|| render(&self.message))
    }
}

impl std::ops::Deref for SharedMessage {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.message
    }
}

/// The result of a create: whether it wrote a message or replayed an earlier one.
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    Created(Arc<SharedMessage>),
    Replayed(Arc<SharedMessage>),
}

impl CreateOutcome {
    pub fn message(&self) -> &SharedMessage {
        match self {
            Self::Created(m) | Self::Replayed(m) => m,
        }
    }
}

#[derive(Clone)]
pub struct Messages {
    store: DynStore,
    cache: Option<MessageCache>,
}

impl Messages {
    /// `cache_ttl` zero turns the cache off.
    pub fn new(store: DynStore, cache_ttl: Duration, cache_max_bytes: u64) -> Self {
        let cache = (!cache_ttl.is_zero()).then(|| MessageCache::new(cache_ttl, cache_max_bytes));
        Self { store, cache }
    }

    pub async fn create(
        &self,
        body: MessageBody,
        ttl: Option<Ttl>,
        key: Option<IdempotencyKey>,
    ) -> ApiResult<CreateOutcome> {
        let message = Message::new(body, ttl);
        match self.store.create_message(&message, key.as_ref()).await? {
            Created::New => {
                MessageEvent::Created.emit();
                Ok(CreateOutcome::Created(SharedMessage::new(message)))
            }
            Created::Replayed(first) => {
                // A retry must be the same request: same text, same time-to-live.
                let same =
                    first.body == message.body && first.ttl_seconds() == message.ttl_seconds();
                if !same {
                    return Err(ApiError::IdempotencyKeyReused);
                }
                MessageEvent::IdempotentReplay.emit();
                Ok(CreateOutcome::Replayed(SharedMessage::new(first)))
            }
        }
    }

    pub async fn get(&self, id: MessageId) -> ApiResult<Arc<SharedMessage>> {
        if let Some(cache) = &self.cache {
            match cache.lookup(id, now) {
                Some(found) => {
                    CacheLookup::Hit.emit();
                    let message = found.ok_or(ApiError::MessageNotFound)?;
                    MessageEvent::Read.emit();
                    return Ok(message);
                }
                None => CacheLookup::Miss.emit(),
            }
        }
        let message = self
            .store
            .get_message(id, now())
            .await?
            .ok_or(ApiError::MessageNotFound)?;
        let message = SharedMessage::new(message);
        if let Some(cache) = &self.cache {
            cache.offer(message.clone());
        }
        MessageEvent::Read.emit();
        Ok(message)
    }

    pub async fn update(&self, update: MessageUpdate) -> ApiResult<Arc<SharedMessage>> {
        let message = SharedMessage::new(self.store.update_message(&update, now()).await?);
        if let Some(cache) = &self.cache {
            cache.offer(message.clone());
        }
        MessageEvent::Updated.emit();
        Ok(message)
    }

    pub async fn delete(&self, id: MessageId) -> ApiResult<Message> {
        let result = self.store.delete_message(id, now()).await;
        if let Some(cache) = &self.cache {
            // On success and on not-found alike: either way the id must not be served from the cache.
            if matches!(result, Ok(_) | Err(crate::store::StoreError::NotFound)) {
                cache.tombstone(id);
            }
        }
        let message = result?;
        MessageEvent::Deleted.emit();
        Ok(message)
    }

    pub async fn count(&self) -> ApiResult<u64> {
        Ok(self.store.count_messages().await?)
    }
}

#[derive(Debug, Clone)]
enum Cached {
    Present(Arc<SharedMessage>),
    Deleted,
}

#[derive(Clone)]
struct MessageCache {
    entries: Cache<MessageId, Cached>,
}

impl MessageCache {
    fn new(ttl: Duration, max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_, v: &Cached| match v {
                // The body, its rendered JSON (the body again plus the other fields), and the entry's
                // own overhead in the cache.
                Cached::Present(m) => u32::try_from(m.body.len())
                    .unwrap_or(u32::MAX)
                    .saturating_mul(2)
                    .saturating_add(ENTRY_OVERHEAD_BYTES + 200),
                Cached::Deleted => ENTRY_OVERHEAD_BYTES,
            })
            .expire_after(EntryExpiry { ttl })
            .build();
        Self { entries }
    }

    /// `None`: not cached. `Some(None)`: known not to exist (deleted or expired). `Some(Some(m))`: a hit.
    /// `now` is called only for a message that can expire: most reads need no clock.
    fn lookup(
        &self,
        id: MessageId,
        now: impl FnOnce() -> DateTime<Utc>,
    ) -> Option<Option<Arc<SharedMessage>>> {
        match self.entries.get(&id)? {
            Cached::Present(m) if !m.is_expired_by(now) => Some(Some(m)),
            Cached::Present(_) | Cached::Deleted => Some(None),
        }
    }

    /// Cache `message` unless the cache knows a newer revision or a deletion.
    fn offer(&self, message: Arc<SharedMessage>) {
        self.entries.entry(message.id).and_compute_with(|existing| {
            match existing.map(|e| e.into_value()) {
                Some(Cached::Deleted) => Op::Nop,
                Some(Cached::Present(current)) if current.revision >= message.revision => Op::Nop,
                _ => Op::Put(Cached::Present(message)),
            }
        });
    }

    fn tombstone(&self, id: MessageId) {
        self.entries.insert(id, Cached::Deleted);
    }
}

/// What one cache entry costs beyond its bytes: moka's entry, its key, the `Arc` and the message's fields.
const ENTRY_OVERHEAD_BYTES: u32 = 400;

struct EntryExpiry {
    ttl: Duration,
}

impl EntryExpiry {
    fn lifetime(&self, value: &Cached) -> Duration {
        match value {
            Cached::Present(message) => match message.expires_at {
                Some(expiry) => (expiry - now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(self.ttl),
                None => self.ttl,
            },
            Cached::Deleted => self.ttl,
        }
    }
}

impl Expiry<MessageId, Cached> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &MessageId,
        value: &Cached,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.lifetime(value))
    }

    fn expire_after_update(
        &self,
        _key: &MessageId,
        value: &Cached,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(value))
    }
}
