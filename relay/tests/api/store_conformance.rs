//! The store conformance suite against every embedded backend.

use std::sync::Arc;

use relay::store::DynStore;
use relay::store::conformance;
use relay::store::memory::MemoryStore;
use relay::store::sqlite::{IntegrityCheck, SqliteStore};

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run_all(|| async { Arc::new(MemoryStore::new()) as DynStore }).await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("case-{n}.db"));
        async move { Arc::new(SqliteStore::open(&path, IntegrityCheck::Quick).unwrap()) as DynStore }
    })
    .await;
}

#[tokio::test]
async fn sqlite_data_survives_reopening() {
    use relay::domain::{Message, MessageBody, now};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    let message = Message::new(MessageBody::from_stored("durable"), None);
    {
        let store = SqliteStore::open(&path, IntegrityCheck::Quick).unwrap();
        relay::store::Store::create_message(&store, &message, None)
            .await
            .unwrap();
        relay::store::Store::close(&store).await;
    }
    let store: DynStore = Arc::new(SqliteStore::open(&path, IntegrityCheck::Quick).unwrap());
    assert_eq!(
        store.get_message(message.id, now()).await.unwrap(),
        Some(message)
    );
    assert_eq!(store.count_messages().await.unwrap(), 1);
}
