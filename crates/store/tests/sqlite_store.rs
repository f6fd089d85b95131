#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The SQLite store on a real file: ids, ordering, paging and reopening.

use ohd_protocol::action::MessageArgs;
use ohd_protocol::{Action, ConversationId, EventId, NewEvent, Source};
use ohd_store::sqlite::{Durability, SqliteStore};
use ohd_store::{ConversationRecord, ConversationStore, EventPage, EventStore, StoreError};
use std::sync::Arc;

fn message(text: &str) -> NewEvent {
    NewEvent::action(Source::User, Action::Message(MessageArgs::user(text)))
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("ohd.db"), Durability::Normal)
        .await
        .unwrap()
}

/// A store with one empty conversation in it.
async fn open_with_conversation(dir: &tempfile::TempDir) -> (SqliteStore, ConversationId) {
    let store = open(dir).await;
    let conv = ConversationId::generate();
    store
        .create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    (store, conv)
}

#[tokio::test]
async fn concurrent_appends_get_dense_unique_ids_that_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, conv) = open_with_conversation(&dir).await;
    let store = Arc::new(store);
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

    let store = open(&dir).await;
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

#[tokio::test]
async fn appending_to_an_unknown_conversation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let err = store
        .append(&ConversationId::generate(), vec![message("x")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConversationNotFound(_)), "{err}");
}

#[tokio::test]
async fn pages_walk_forward_and_backward_and_say_whether_there_is_more() {
    let dir = tempfile::tempdir().unwrap();
    let (store, conv) = open_with_conversation(&dir).await;
    let batch = (0..10).map(|i| message(&i.to_string())).collect();
    store.append(&conv, batch).await.unwrap();
    let page = |start_id, end_id, reverse, limit| EventPage {
        start_id,
        end_id,
        reverse,
        limit,
    };
    let ids = |(events, more): (Vec<ohd_store::StoredEvent>, bool)| {
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

#[tokio::test]
async fn conversations_list_newest_first_in_pages_and_delete_removes_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
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

#[tokio::test]
async fn a_follower_taking_items_with_and_without_waiting_sees_every_event_once_in_order() {
    use ohd_store::{EventLog, Followed, Follower, LocalNotifier};
    let dir = tempfile::tempdir().unwrap();
    let (store, conv) = open_with_conversation(&dir).await;
    // A live channel of 4: a writer far ahead makes the follower lag and read the store.
    let log = EventLog::new(Arc::new(store), Arc::new(LocalNotifier::new(4)));
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
