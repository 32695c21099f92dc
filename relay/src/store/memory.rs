//! The in-memory store: for unit tests and throwaway runs (`--store memory:`). Loses everything on exit.
//! Its behaviour is the reference the conformance suite holds the durable backends to.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use super::{Backend, Created, Store, StoreError, StoreResult};
use crate::domain::{
    IdempotencyKey, LogCursor, LogPage, Message, MessageId, MessageUpdate, PageLimit, SavedValue,
};

#[derive(Default)]
struct State {
    messages: HashMap<MessageId, Message>,
    /// key -> (first message, when the key is forgotten)
    idempotency: HashMap<IdempotencyKey, (Message, DateTime<Utc>)>,
    log: BTreeMap<u64, DateTime<Utc>>,
    next_log_position: u64,
    saved: Option<SavedValue>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    async fn create_message(
        &self,
        message: &Message,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Created> {
        let mut state = self.state.lock().await;
        if let Some(key) = idempotency {
            if let Some((first, forget_at)) = state.idempotency.get(key)
                && *forget_at > message.created_at
            {
                return Ok(Created::Replayed(first.clone()));
            }
            let forget_at = message.created_at + IdempotencyKey::RETENTION;
            state
                .idempotency
                .insert(key.clone(), (message.clone(), forget_at));
        }
        if state.messages.contains_key(&message.id) {
            return Err(StoreError::Internal(format!(
                "message id {} already exists",
                message.id
            )));
        }
        state.messages.insert(message.id, message.clone());
        Ok(Created::New)
    }

    async fn get_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Option<Message>> {
        let state = self.state.lock().await;
        Ok(state
            .messages
            .get(&id)
            .filter(|m| !m.is_expired_at(now))
            .cloned())
    }

    async fn update_message(
        &self,
        update: &MessageUpdate,
        now: DateTime<Utc>,
    ) -> StoreResult<Message> {
        let mut state = self.state.lock().await;
        let current = state
            .messages
            .get_mut(&update.id)
            .filter(|m| !m.is_expired_at(now))
            .ok_or(StoreError::NotFound)?;
        if !update.precondition.admits(current.revision) {
            return Err(StoreError::PreconditionFailed);
        }
        current.body = update.body.clone();
        current.updated_at = now;
        current.expires_at = update.ttl.map(|ttl| ttl.expiry_from(now));
        current.revision = current.revision.next();
        Ok(current.clone())
    }

    async fn delete_message(&self, id: MessageId, now: DateTime<Utc>) -> StoreResult<Message> {
        let mut state = self.state.lock().await;
        match state.messages.get(&id) {
            None => Err(StoreError::NotFound),
            Some(m) if m.is_expired_at(now) => Err(StoreError::NotFound),
            Some(_) => state.messages.remove(&id).ok_or(StoreError::NotFound),
        }
    }

    async fn count_messages(&self) -> StoreResult<u64> {
        Ok(self.state.lock().await.messages.len() as u64)
    }

    async fn sweep_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<u64> {
        let mut state = self.state.lock().await;
        let expired: Vec<MessageId> = state
            .messages
            .values()
            .filter(|m| m.is_expired_at(now))
            .map(|m| m.id)
            .take(limit)
            .collect();
        for id in &expired {
            state.messages.remove(id);
        }
        state
            .idempotency
            .retain(|_, (_, forget_at)| *forget_at > now);
        Ok(expired.len() as u64)
    }

    async fn append_timestamp(&self, at: DateTime<Utc>) -> StoreResult<()> {
        let mut state = self.state.lock().await;
        state.next_log_position += 1;
        let position = state.next_log_position;
        state.log.insert(position, at);
        Ok(())
    }

    async fn list_timestamps(
        &self,
        limit: PageLimit,
        cursor: Option<LogCursor>,
    ) -> StoreResult<LogPage> {
        let state = self.state.lock().await;
        let upper = cursor.map_or(u64::MAX, LogCursor::position);
        let mut entries = state
            .log
            .range(..upper)
            .rev()
            .take(limit.get() as usize + 1);
        let mut timestamps = Vec::new();
        let mut last = None;
        for (position, at) in entries.by_ref().take(limit.get() as usize) {
            timestamps.push(*at);
            last = Some(*position);
        }
        let more = entries.next().is_some();
        Ok(LogPage {
            total: state.log.len() as u64,
            timestamps,
            next: last.filter(|_| more).map(LogCursor::new),
        })
    }

    async fn get_saved(&self) -> StoreResult<Option<SavedValue>> {
        Ok(self.state.lock().await.saved.clone())
    }

    async fn put_saved(&self, value: &SavedValue) -> StoreResult<()> {
        self.state.lock().await.saved = Some(value.clone());
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
