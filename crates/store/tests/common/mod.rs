//! Test bodies every store must pass, whatever keeps the events: each test file runs them
//! against its own store through a [`Backend`].

use async_trait::async_trait;
use ohd_protocol::action::MessageArgs;
use ohd_protocol::{Action, ConversationId, EventId, NewEvent, Source};
use ohd_store::{
    ConversationRecord, EventLog, EventPage, Followed, Follower, LocalNotifier, Store, StoreError,
    StoredEvent,
};
use std::sync::Arc;

/// Where a store lives: `open` opens it, and opening again (after the first is dropped)
/// "reopens" the same data.
#[async_trait(?Send)]
pub trait Backend {
    async fn open(&self) -> Arc<dyn Store>;
}

pub fn message(text: &str) -> NewEvent {
    NewEvent::action(Source::User, Action::Message(MessageArgs::user(text)))
}

/// A store with one empty conversation in it.
pub async fn open_with_conversation(backend: &impl Backend) -> (Arc<dyn Store>, ConversationId) {
    let store = backend.open().await;
    let conv = ConversationId::generate();
    store
        .create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    (store, conv)
}

pub async fn concurrent_appends_get_dense_unique_ids_that_survive_a_reopen(backend: &impl Backend) {
    let (store, conv) = open_with_conversation(backend).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, conv) = (store.clone(), conv.clone());
        tasks.push(tokio::spawn(async move {
            store.append(&conv, vec![message(&format!("m{i}"))]).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap()[0].id.0);
    }
    ids.sort();
    assert_eq!(ids, (0..200).collect::<Vec<_>>());
    drop(store);

    let store = backend.open().await;
    let all = store.read_after(&conv, None, 1000).await.unwrap();
    assert_eq!(all.len(), 200);
    assert!(all.iter().enumerate().all(|(i, e)| e.id.0 == i as u64));
    let next = store
        .append(&conv, vec![message("after reopen")])
        .await
        .unwrap();
    assert_eq!(next[0].id, EventId(200));
    let decoded = next[0].decode().unwrap();
    assert_eq!(decoded.id, EventId(200));
}

pub async fn appending_to_an_unknown_conversation_is_refused(backend: &impl Backend) {
    let store = backend.open().await;
    let err = store
        .append(&ConversationId::generate(), vec![message("x")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConversationNotFound(_)), "{err}");
}

pub async fn pages_walk_forward_and_backward_and_say_whether_there_is_more(backend: &impl Backend) {
    let (store, conv) = open_with_conversation(backend).await;
    let batch = (0..10).map(|i| message(&i.to_string())).collect();
    store.append(&conv, batch).await.unwrap();
    let page = |start_id, end_id, reverse, limit| EventPage {
        start_id,
        end_id,
        reverse,
        limit,
    };
    let ids = |(events, more): (Vec<StoredEvent>, bool)| {
        (events.iter().map(|e| e.id.0).collect::<Vec<_>>(), more)
    };
    assert_eq!(
        ids(store
            .read_page(&conv, page(0, None, false, 4))
            .await
            .unwrap()),
        (vec![0, 1, 2, 3], true)
    );
    assert_eq!(
        ids(store
            .read_page(&conv, page(8, None, false, 4))
            .await
            .unwrap()),
        (vec![8, 9], false)
    );
    assert_eq!(
        ids(store
            .read_page(&conv, page(0, Some(5), true, 3))
            .await
            .unwrap()),
        (vec![5, 4, 3], true)
    );
    assert_eq!(store.last_event_id(&conv).await.unwrap(), Some(EventId(9)));
}

pub async fn conversations_list_newest_first_in_pages_and_delete_removes_events(
    backend: &impl Backend,
) {
    let store = backend.open().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = ConversationId::generate();
        store
            .create_conversation(ConversationRecord::new(id.clone()))
            .await
            .unwrap();
        ids.push(id);
    }
    let first = store.list_conversations(3, None).await.unwrap();
    let got: Vec<_> = first.conversations.iter().map(|c| c.id.clone()).collect();
    assert_eq!(got, vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    let second = store
        .list_conversations(3, first.next_page.as_deref())
        .await
        .unwrap();
    assert_eq!(second.conversations.len(), 2);
    assert_eq!(second.next_page, None);

    store.append(&ids[0], vec![message("x")]).await.unwrap();
    assert!(store.rename_conversation(&ids[0], "Renamed").await.unwrap());
    assert_eq!(
        store
            .get_conversation(&ids[0])
            .await
            .unwrap()
            .unwrap()
            .title,
        "Renamed"
    );
    assert!(store.delete_conversation(&ids[0]).await.unwrap());
    assert!(!store.delete_conversation(&ids[0]).await.unwrap());
    assert!(
        store
            .read_after(&ids[0], None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.get_conversation(&ids[0]).await.unwrap().is_none());
}

pub async fn a_follower_taking_items_with_and_without_waiting_sees_every_event_once_in_order(
    backend: &impl Backend,
) {
    let (store, conv) = open_with_conversation(backend).await;
    // A live channel of 4: a writer far ahead makes the follower lag and read the store.
    let log = EventLog::new(store, Arc::new(LocalNotifier::new(4)));
    for i in 0..10 {
        log.append(&conv, message(&format!("before {i}")))
            .await
            .unwrap();
    }
    let mut follower = Follower::new(log.clone(), conv.clone(), Some(EventId(2)));
    let writer = tokio::spawn({
        let (log, conv) = (log.clone(), conv.clone());
        async move {
            for i in 0..60 {
                let batch = (0..5).map(|j| message(&format!("live {i}.{j}"))).collect();
                log.append_all(&conv, batch).await.unwrap();
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let (mut ids, mut fast) = (Vec::new(), 0);
    while ids.last() != Some(&309) {
        let item = match follower.try_next() {
            Some(item) => {
                fast += 1;
                item
            }
            None => follower.next().await.unwrap(),
        };
        if let Followed::Event(event) = item {
            ids.push(event.id.0);
        }
    }
    writer.await.unwrap();
    assert_eq!(ids, (3..=309).collect::<Vec<_>>());
    assert!(fast > 0, "some items were at hand without waiting");
    assert!(follower.try_next().is_none());
}

/// Times are compared to the microsecond, which every store keeps.
fn micros(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_micros()
}

pub async fn a_conversation_record_round_trips_and_cannot_be_created_twice(backend: &impl Backend) {
    let store = backend.open().await;
    let id = ConversationId::generate();
    let mut record = ConversationRecord::new(id.clone());
    record.title = "Fix the build".to_owned();
    record.selected_repository = Some("octo/repo".to_owned());
    record.selected_branch = Some("main".to_owned());
    record.git_provider = Some("github".to_owned());
    record.trigger = "resolver".to_owned();
    store.create_conversation(record.clone()).await.unwrap();

    let got = store.get_conversation(&id).await.unwrap().unwrap();
    assert_eq!(micros(got.created_at), micros(record.created_at));
    assert_eq!(micros(got.last_updated_at), micros(record.last_updated_at));
    let same_times = ConversationRecord {
        created_at: record.created_at,
        last_updated_at: record.last_updated_at,
        ..got
    };
    assert_eq!(same_times, record);

    let err = store
        .create_conversation(ConversationRecord::new(id.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConversationExists(_)), "{err}");
    assert_eq!(
        store.get_conversation(&id).await.unwrap().unwrap().title,
        "Fix the build",
        "the refused create changed nothing"
    );
}

pub async fn a_batch_shares_one_timestamp_which_becomes_the_last_update(backend: &impl Backend) {
    let (store, conv) = open_with_conversation(backend).await;
    let created = store.get_conversation(&conv).await.unwrap().unwrap();
    assert!(store.append(&conv, Vec::new()).await.unwrap().is_empty());
    let first = store.append(&conv, vec![message("a")]).await.unwrap();
    let batch = store
        .append(&conv, vec![message("b"), message("c"), message("d")])
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|e| e.id.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let times: Vec<_> = batch
        .iter()
        .map(|e| e.decode().unwrap().timestamp)
        .collect();
    assert!(times.iter().all(|t| *t == times[0]), "{times:?}");
    assert!(first[0].decode().unwrap().timestamp <= times[0]);
    let updated = store.get_conversation(&conv).await.unwrap().unwrap();
    assert_eq!(
        micros(updated.last_updated_at),
        micros(times[0].as_datetime())
    );
    assert!(updated.last_updated_at >= created.last_updated_at);
    // What was returned is what is stored, byte for byte.
    let stored = store.read_after(&conv, None, 10).await.unwrap();
    assert_eq!(stored[1..], batch[..]);
    assert_eq!(stored[0], first[0]);
}

pub async fn a_conversation_deleted_and_created_again_starts_from_id_0(backend: &impl Backend) {
    let (store, conv) = open_with_conversation(backend).await;
    store
        .append(&conv, vec![message("a"), message("b")])
        .await
        .unwrap();
    assert!(store.delete_conversation(&conv).await.unwrap());
    let err = store.append(&conv, vec![message("x")]).await.unwrap_err();
    assert!(matches!(err, StoreError::ConversationNotFound(_)), "{err}");
    store
        .create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    let again = store.append(&conv, vec![message("c")]).await.unwrap();
    assert_eq!(again[0].id, EventId(0));
    assert_eq!(store.last_event_id(&conv).await.unwrap(), Some(EventId(0)));
}

/// Runs each named body from this module as a `#[tokio::test]` against `$backend`, an async
/// expression giving `Option<impl Backend>` (`None` skips the test).
macro_rules! store_tests {
    ($backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(backend) = $backend.await else { return };
                common::$name(&backend).await;
            }
        )*
    };
}
