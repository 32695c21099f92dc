//! The message service: what `/messages` and `/paste` share. It puts the read-through cache in front of
//! the store, checks idempotent retries, and emits the message events. It knows nothing of HTTP: it
//! returns its own [`ServiceError`], which the HTTP layer maps to statuses.
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

use chrono::{DateTime, Utc};
use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::domain::{IdempotencyKey, Message, MessageBody, MessageId, MessageUpdate, Ttl, now};
use crate::store::{Created, DynStore, StoreError};
use crate::telemetry::events::{CacheLookup, Event, MessageEvent};

/// What a message operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such message, or it has expired.
    #[error("no such message")]
    NotFound,
    /// The `Idempotency-Key` was used before with a different request.
    #[error("the idempotency key was used with a different request")]
    IdempotencyKeyReused,
    /// The store refused or failed (precondition failed, busy, unavailable, internal).
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// A message as the service hands it out, shared with the cache, and one representation `R` of it
/// that the caller makes at most once per cached revision (the HTTP layer keeps its JSON body and
/// `ETag` there, so a cached message is serialized once rather than on every read). The service never
/// looks inside `R`.
#[derive(Debug)]
pub struct SharedMessage<R> {
    message: Message,
    representation: OnceLock<R>,
}

impl<R> SharedMessage<R> {
    fn new(message: Message) -> Arc<Self> {
        Arc::new(Self {
            message,
            representation: OnceLock::new(),
        })
    }

    /// The representation `make` makes of this message, made at most once.
    pub fn representation(&self, make: impl FnOnce(&Message) -> R) -> &R {
        self.representation.get_or_init(|| make(&self.message))
    }
}

impl<R> std::ops::Deref for SharedMessage<R> {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.message
    }
}

/// The result of a create: whether it wrote a message or replayed an earlier one.
#[derive(Debug)]
pub enum CreateOutcome<R> {
    Created(Arc<SharedMessage<R>>),
    Replayed(Arc<SharedMessage<R>>),
}

impl<R> CreateOutcome<R> {
    pub fn message(&self) -> &SharedMessage<R> {
        match self {
            Self::Created(m) | Self::Replayed(m) => m,
        }
    }
}

/// The message service over `store`, caching messages with their representation `R`.
pub struct Messages<R> {
    store: DynStore,
    cache: Option<MessageCache<R>>,
}

impl<R: Send + Sync + 'static> Messages<R> {
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
    ) -> ServiceResult<CreateOutcome<R>> {
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
                    return Err(ServiceError::IdempotencyKeyReused);
                }
                MessageEvent::IdempotentReplay.emit();
                Ok(CreateOutcome::Replayed(SharedMessage::new(first)))
            }
        }
    }

    pub async fn get(&self, id: MessageId) -> ServiceResult<Arc<SharedMessage<R>>> {
        if let Some(cache) = &self.cache {
            match cache.lookup(id, now) {
                Some(found) => {
                    CacheLookup::Hit.emit();
                    let message = found.ok_or(ServiceError::NotFound)?;
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
            .ok_or(ServiceError::NotFound)?;
        let message = SharedMessage::new(message);
        if let Some(cache) = &self.cache {
            cache.offer(message.clone());
        }
        MessageEvent::Read.emit();
        Ok(message)
    }

    pub async fn update(&self, update: MessageUpdate) -> ServiceResult<Arc<SharedMessage<R>>> {
        let message = SharedMessage::new(self.store.update_message(&update, now()).await?);
        if let Some(cache) = &self.cache {
            cache.offer(message.clone());
        }
        MessageEvent::Updated.emit();
        Ok(message)
    }

    pub async fn delete(&self, id: MessageId) -> ServiceResult<Message> {
        let result = self.store.delete_message(id, now()).await;
        if let Some(cache) = &self.cache {
            // On success and on not-found alike: either way the id must not be served from the cache.
            if matches!(result, Ok(_) | Err(StoreError::NotFound)) {
                cache.tombstone(id);
            }
        }
        let message = result?;
        MessageEvent::Deleted.emit();
        Ok(message)
    }

    pub async fn count(&self) -> ServiceResult<u64> {
        Ok(self.store.count_messages().await?)
    }
}

enum Cached<R> {
    Present(Arc<SharedMessage<R>>),
    Deleted,
}

impl<R> Clone for Cached<R> {
    fn clone(&self) -> Self {
        match self {
            Self::Present(m) => Self::Present(m.clone()),
            Self::Deleted => Self::Deleted,
        }
    }
}

struct MessageCache<R> {
    entries: Cache<MessageId, Cached<R>>,
}

impl<R: Send + Sync + 'static> MessageCache<R> {
    fn new(ttl: Duration, max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_, v: &Cached<R>| match v {
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
    ) -> Option<Option<Arc<SharedMessage<R>>>> {
        match self.entries.get(&id)? {
            Cached::Present(m) if !m.is_expired_by(now) => Some(Some(m)),
            Cached::Present(_) | Cached::Deleted => Some(None),
        }
    }

    /// Cache `message` unless the cache knows a newer revision or a deletion.
    fn offer(&self, message: Arc<SharedMessage<R>>) {
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
    fn lifetime<R>(&self, value: &Cached<R>) -> Duration {
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

impl<R> Expiry<MessageId, Cached<R>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &MessageId,
        value: &Cached<R>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.lifetime(value))
    }

    fn expire_after_update(
        &self,
        _key: &MessageId,
        value: &Cached<R>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(value))
    }
}
