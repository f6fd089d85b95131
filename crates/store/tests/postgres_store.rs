#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The PostgreSQL store: the bodies shared with SQLite (`common`), then what only a store shared
//! by several nodes has: concurrent nodes, leases and fencing, documents, and the notifier.
//!
//! Each test gets a database of its own on the server at `OHD_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards. Without a server the tests
//! are skipped, unless `CI` is set: then they fail.

#[macro_use]
mod common;

use async_trait::async_trait;
use common::{Backend, message, open_with_conversation};
use ohd_protocol::{ConversationId, EventId};
use ohd_store::postgres::{PgNotifier, PgNotifierConfig, PgStore};
use ohd_store::testing::{TestDatabase, with_database};
use ohd_store::{
    ConversationRecord, ConversationStore, DocumentStore, EventLog, EventStore, Followed, Follower,
    LeaseStore, LogItem, Notifier, Store, StoreError,
};
use sqlx::{Executor, Row};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How long anything that should arrive may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// `url` with its user replaced by `user` (the password, if any, kept).
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (userinfo, host) = rest.rsplit_once('@').unwrap_or(("", rest));
    match userinfo.split_once(':') {
        Some((_, password)) => format!("{scheme}://{user}:{password}@{host}"),
        None => format!("{scheme}://{user}@{host}"),
    }
}

/// What these tests do with their database besides making and dropping it.
#[allow(async_fn_in_trait)]
trait TestDatabaseExt {
    async fn url_as_new_role(&self, suffix: &str) -> String;
    async fn node(&self, name: &str, check_every: Duration) -> Node;
    async fn node_at(&self, url: &str, name: &str, check_every: Duration) -> Node;
    async fn allow_logins(&self, suffix: &str, allow: bool);
    async fn kill_listener(&self, node: &str) -> usize;
    async fn listener_pids(&self, node: &str) -> Vec<i32>;
}

impl TestDatabaseExt for TestDatabase {
    /// The URL of this database as a new superuser role of its own, whose logins
    /// [`TestDatabase::allow_logins`] can stop without stopping anyone else's.
    async fn url_as_new_role(&self, suffix: &str) -> String {
        let role = format!("{}_{suffix}", self.name);
        let password = self
            .server_url
            .split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, password)| format!(" PASSWORD '{password}'"))
            .unwrap_or_default();
        self.admin()
            .await
            .execute(sqlx::AssertSqlSafe(format!(
                "CREATE ROLE \"{role}\" LOGIN SUPERUSER{password}"
            )))
            .await
            .unwrap();
        self.drop_role_afterwards(role.clone());
        with_user(&self.url, &role)
    }

    /// A node: its own store (pool) and notifier, as a separate process would have.
    async fn node(&self, name: &str, check_every: Duration) -> Node {
        self.node_at(&self.url, name, check_every).await
    }

    async fn node_at(&self, url: &str, name: &str, check_every: Duration) -> Node {
        let store = PgStore::connect(url).await.unwrap();
        let mut config = PgNotifierConfig::new(name, 1024);
        config.check_every = check_every;
        let notifier = Arc::new(PgNotifier::start(store.clone(), config).await.unwrap());
        let log = EventLog::new(Arc::new(store.clone()), notifier.clone());
        Node {
            store,
            notifier,
            log,
        }
    }

    /// Lets a role from [`TestDatabase::url_as_new_role`] log in, or keeps its new connections
    /// out (those open stay).
    async fn allow_logins(&self, suffix: &str, allow: bool) {
        let login = if allow { "LOGIN" } else { "NOLOGIN" };
        self.admin()
            .await
            .execute(sqlx::AssertSqlSafe(format!(
                "ALTER ROLE \"{}_{suffix}\" {login}",
                self.name
            )))
            .await
            .unwrap();
    }

    /// Ends the LISTEN connection of node `node`; returns how many there were.
    async fn kill_listener(&self, node: &str) -> usize {
        let killed = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = $2",
        )
        .bind(&self.name)
        .bind(format!("ohd-listen:{node}"))
        .fetch_all(&mut self.admin().await)
        .await
        .unwrap();
        killed.len()
    }

    async fn listener_pids(&self, node: &str) -> Vec<i32> {
        sqlx::query("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2")
            .bind(&self.name)
            .bind(format!("ohd-listen:{node}"))
            .fetch_all(&mut self.admin().await)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<i32, _>(0))
            .collect()
    }
}

#[async_trait(?Send)]
impl Backend for TestDatabase {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(self.store().await)
    }
}

struct Node {
    store: PgStore,
    notifier: Arc<PgNotifier>,
    log: EventLog,
}

store_tests!(TestDatabase::create();
    concurrent_appends_get_dense_unique_ids_that_survive_a_reopen,
    appending_to_an_unknown_conversation_is_refused,
    pages_walk_forward_and_backward_and_say_whether_there_is_more,
    conversations_list_newest_first_in_pages_and_delete_removes_events,
    a_follower_taking_items_with_and_without_waiting_sees_every_event_once_in_order,
    a_conversation_record_round_trips_and_cannot_be_created_twice,
    a_batch_shares_one_timestamp_which_becomes_the_last_update,
    a_conversation_deleted_and_created_again_starts_from_id_0,
);

/// The next event a follower yields (notices are skipped), or a failure after [`PATIENCE`].
async fn next_event(follower: &mut Follower) -> EventId {
    loop {
        match tokio::time::timeout(PATIENCE, follower.next()).await {
            Ok(Ok(Followed::Event(event))) => return event.id,
            Ok(Ok(Followed::Notice(_))) => {}
            Ok(Err(e)) => panic!("follower failed: {e}"),
            Err(_) => panic!("no event within {PATIENCE:?} after {:?}", follower.cursor()),
        }
    }
}

/// Takes events from `follower` until `last`, asserting each id comes once and in order.
async fn follow_until(follower: &mut Follower, last: u64) {
    let mut expected = follower.cursor().map_or(0, |c| c.0 + 1);
    while expected <= last {
        assert_eq!(next_event(follower).await, EventId(expected));
        expected += 1;
    }
}

/// Nothing more arrives on `rx` for a while.
async fn stays_quiet(rx: &mut broadcast::Receiver<LogItem>) {
    match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        Err(_) => {}
        Ok(item) => panic!("unexpected {item:?}"),
    }
}

async fn next_notice(rx: &mut broadcast::Receiver<LogItem>) -> Arc<str> {
    loop {
        match tokio::time::timeout(PATIENCE, rx.recv()).await {
            Ok(Ok(LogItem::Notice(json))) => return json,
            Ok(Ok(LogItem::Event(_))) => {}
            other => panic!("no notice: {other:?}"),
        }
    }
}

/// The ids a raw subscriber has received so far.
fn drain_ids(rx: &mut broadcast::Receiver<LogItem>) -> Vec<u64> {
    let mut ids = Vec::new();
    while let Ok(item) = rx.try_recv() {
        if let LogItem::Event(event) = item {
            ids.push(event.id.0);
        }
    }
    ids
}

#[test]
fn urls_get_another_database_or_user() {
    assert_eq!(
        with_database("postgres://u:p@h:5432/test?sslmode=disable", "x"),
        "postgres://u:p@h:5432/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    assert_eq!(with_user("postgres://u:p@h/x", "r"), "postgres://r:p@h/x");
    assert_eq!(with_user("postgres://h/x", "r"), "postgres://r@h/x");
}

#[test]
fn connecting_and_starting_a_notifier_can_run_on_any_runtime_thread() {
    fn send<T: Send>(_: T) {}
    send(PgStore::connect("postgres://postgres@127.0.0.1:5432/test"));
    let _ = |store: PgStore| send(PgNotifier::start(store, PgNotifierConfig::new("n", 1)));
}

#[tokio::test]
async fn two_nodes_appending_at_once_get_dense_unique_ids() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (a, conv) = open_with_conversation(&db).await;
    let b: Arc<dyn Store> = Arc::new(db.store().await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        for store in [a.clone(), b.clone()] {
            let conv = conv.clone();
            tasks.push(tokio::spawn(async move {
                let batch = vec![message(&format!("{i}.0")), message(&format!("{i}.1"))];
                store.append(&conv, batch).await.unwrap()
            }));
        }
    }
    let mut ids = Vec::new();
    for task in tasks {
        let batch = task.await.unwrap();
        // A batch is one unit: consecutive ids.
        assert_eq!(batch[1].id.0, batch[0].id.0 + 1);
        ids.extend(batch.iter().map(|e| e.id.0));
    }
    ids.sort();
    assert_eq!(ids, (0..400).collect::<Vec<_>>());
    let stored = b.read_after(&conv, None, 1000).await.unwrap();
    assert_eq!(stored.len(), 400);
    for (i, event) in stored.iter().enumerate() {
        assert_eq!(event.id.0, i as u64);
        assert_eq!(event.decode().unwrap().id, event.id);
    }
    // The database clock stamps them after taking the row lock: times follow ids.
    let times: Vec<_> = stored
        .iter()
        .map(|e| e.decode().unwrap().timestamp)
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test]
async fn a_lease_is_exclusive_until_it_expires_then_fences_out_its_old_holder() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = (db.store().await, db.store().await);
    let conv = ConversationId::generate();
    a.create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    let (short, long) = (Duration::from_millis(300), Duration::from_secs(30));

    let fence_a = a
        .try_acquire_lease(&conv, "a", long)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.try_acquire_lease(&conv, "b", long).await.unwrap(), None);
    // The holder asking again gets a new grant, which fences out the old one (another task of
    // the same node that has not ended yet).
    let old_a = fence_a;
    let fence_a = a
        .try_acquire_lease(&conv, "a", long)
        .await
        .unwrap()
        .unwrap();
    assert!(fence_a.token > old_a.token);
    let err = a
        .append_fenced(&conv, vec![message("old grant")], &old_a)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert!(!a.release_lease(&old_a).await.unwrap());
    // A title goes in only under the current grant, as events do.
    let err = a
        .rename_fenced(&conv, "old owner's title", &old_a)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert!(
        a.rename_fenced(&conv, "owner's title", &fence_a)
            .await
            .unwrap()
    );
    assert_eq!(
        b.get_conversation(&conv).await.unwrap().unwrap().title,
        "owner's title"
    );
    let holder = b.lease_holder(&conv).await.unwrap().unwrap();
    assert_eq!(
        (holder.node.as_str(), holder.token, holder.expired),
        ("a", fence_a.token, false)
    );
    let written = a
        .append_fenced(&conv, vec![message("a0")], &fence_a)
        .await
        .unwrap();
    assert_eq!(written[0].id, EventId(0));
    // Renewed for a short while only (still the same grant), then left to lapse.
    assert!(a.renew_lease(&fence_a, short).await.unwrap());

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.lease_holder(&conv).await.unwrap().unwrap().expired);
    let err = a
        .append_fenced(&conv, vec![message("a late")], &fence_a)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert!(
        !a.renew_lease(&fence_a, short).await.unwrap(),
        "an expired lease cannot be renewed"
    );

    let fence_b = b
        .try_acquire_lease(&conv, "b", long)
        .await
        .unwrap()
        .unwrap();
    assert!(fence_b.token > fence_a.token);
    let err = a
        .append_fenced(&conv, vec![message("a stale")], &fence_a)
        .await
        .unwrap_err();
    match &err {
        StoreError::Fenced { conversation, .. } => assert_eq!(conversation, &conv),
        other => panic!("{other}"),
    }
    assert_eq!(
        a.last_event_id(&conv).await.unwrap(),
        Some(EventId(0)),
        "a refused append writes nothing"
    );
    let written = b
        .append_fenced(&conv, vec![message("b1"), message("b2")], &fence_b)
        .await
        .unwrap();
    assert_eq!(
        written.iter().map(|e| e.id.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(b.renew_lease(&fence_b, long).await.unwrap());
    // A fence is for one conversation only.
    let other = ConversationId::generate();
    a.create_conversation(ConversationRecord::new(other.clone()))
        .await
        .unwrap();
    let err = b
        .append_fenced(&other, vec![message("x")], &fence_b)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    // Without a fence, any node still appends (user actions).
    let unfenced = a.append(&conv, vec![message("user")]).await.unwrap();
    assert_eq!(unfenced[0].id, EventId(3));
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once_and_tokens_only_grow() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = (db.store().await, db.store().await);
    let (conv, long) = (ConversationId::generate(), Duration::from_secs(60));
    a.create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    assert_eq!(a.lease_holder(&conv).await.unwrap(), None);

    let fence_a = a
        .try_acquire_lease(&conv, "a", long)
        .await
        .unwrap()
        .unwrap();
    assert!(a.release_lease(&fence_a).await.unwrap());
    assert!(a.lease_holder(&conv).await.unwrap().unwrap().expired);
    assert!(!a.release_lease(&fence_a).await.unwrap());
    let fence_b = b
        .try_acquire_lease(&conv, "b", long)
        .await
        .unwrap()
        .unwrap();
    assert!(fence_b.token > fence_a.token);
    let err = a
        .append_fenced(&conv, Vec::new(), &fence_a)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { .. }),
        "even an empty fenced append checks: {err}"
    );
    assert!(!a.renew_lease(&fence_a, long).await.unwrap());

    assert!(b.release_lease(&fence_b).await.unwrap());
    let fence_a2 = a
        .try_acquire_lease(&conv, "a", long)
        .await
        .unwrap()
        .unwrap();
    assert!(fence_a2.token > fence_b.token);
    let err = a
        .append_fenced(&conv, vec![message("old fence")], &fence_a)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { .. }),
        "the same node's earlier grant is fenced too: {err}"
    );

    // Deleting the conversation ends its lease, and a deleted conversation is never leased
    // again; made again, its token still grows.
    assert!(a.delete_conversation(&conv).await.unwrap());
    assert!(b.lease_holder(&conv).await.unwrap().unwrap().expired);
    assert_eq!(b.try_acquire_lease(&conv, "b", long).await.unwrap(), None);
    a.create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    let fence_b2 = b
        .try_acquire_lease(&conv, "b", long)
        .await
        .unwrap()
        .unwrap();
    assert!(fence_b2.token > fence_a2.token);
}

#[tokio::test]
async fn documents_are_shared_by_the_nodes() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = (db.store().await, db.store().await);
    assert_eq!(a.get_document("settings").await.unwrap(), None);
    a.put_document("settings", r#"{"llm_model": "x", "b": 1}"#)
        .await
        .unwrap();
    assert_eq!(
        b.get_document("settings").await.unwrap().as_deref(),
        Some(r#"{"llm_model": "x", "b": 1}"#),
        "kept verbatim"
    );
    b.put_document("settings", "{}").await.unwrap();
    assert_eq!(
        a.get_document("settings").await.unwrap().as_deref(),
        Some("{}")
    );
    assert!(a.delete_document("settings").await.unwrap());
    assert!(!b.delete_document("settings").await.unwrap());
    assert_eq!(b.get_document("settings").await.unwrap(), None);
    // Two nodes changing what they both read: the second to write is told, nothing is lost.
    assert!(
        a.replace_document("secrets", None, "{\"a\":1}")
            .await
            .unwrap()
    );
    assert!(
        !b.replace_document("secrets", None, "{\"b\":1}")
            .await
            .unwrap()
    );
    assert!(
        b.replace_document("secrets", Some("{\"a\":1}"), "{\"a\":1,\"b\":1}")
            .await
            .unwrap()
    );
    assert!(
        !a.replace_document("secrets", Some("{\"a\":1}"), "{\"a\":2}")
            .await
            .unwrap()
    );
    assert_eq!(
        a.get_document("secrets").await.unwrap().as_deref(),
        Some("{\"a\":1,\"b\":1}")
    );
}

#[tokio::test]
async fn a_node_learns_which_of_its_conversations_other_nodes_watch() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = (db.store().await, db.store().await);
    let (one, two) = (ConversationId::generate(), ConversationId::generate());
    b.mark_watched("b", std::slice::from_ref(&one), Duration::from_secs(30))
        .await
        .unwrap();
    a.mark_watched("a", std::slice::from_ref(&two), Duration::from_secs(30))
        .await
        .unwrap();
    // Its own clients do not count as "elsewhere".
    assert_eq!(
        a.watched_elsewhere("a", &[one.clone(), two.clone()])
            .await
            .unwrap(),
        vec![one.clone()]
    );
    // A word that ran out counts no more.
    b.mark_watched("b", std::slice::from_ref(&one), Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.watched_elsewhere("a", &[one]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_follower_on_another_node_gets_every_event_once_in_order() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = db.node("a", Duration::from_secs(1)).await;
    let b = db.node("b", Duration::from_secs(1)).await;
    let conv = ConversationId::generate();
    a.store
        .create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    let mut follower = Follower::new(b.log.clone(), conv.clone(), None);
    let mut raw = b.notifier.subscribe(&conv);
    let writer = tokio::spawn({
        let (log, conv) = (a.log.clone(), conv.clone());
        async move {
            let mut i = 0;
            while i < 200 {
                // Singles and batches.
                let n = [1, 3, 1, 5][i % 4].min(200 - i);
                let batch = (0..n).map(|j| message(&format!("{}", i + j))).collect();
                log.append_all(&conv, batch).await.unwrap();
                i += n;
            }
        }
    });
    follow_until(&mut follower, 199).await;
    writer.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(follower.try_next().is_none(), "nothing twice");
    // What node B published itself: each id at most once, in order.
    let ids = drain_ids(&mut raw);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(ids.last(), Some(&199));
}

#[tokio::test]
async fn events_of_both_nodes_interleaved_reach_both_in_order() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = db.node("a", Duration::from_secs(1)).await;
    let b = db.node("b", Duration::from_secs(1)).await;
    let conv = ConversationId::generate();
    a.store
        .create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    let mut followers = [
        Follower::new(a.log.clone(), conv.clone(), None),
        Follower::new(b.log.clone(), conv.clone(), None),
    ];
    let mut raws = [a.notifier.subscribe(&conv), b.notifier.subscribe(&conv)];
    let mut writers = Vec::new();
    for (name, log) in [("a", a.log.clone()), ("b", b.log.clone())] {
        let conv = conv.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..100 {
                log.append(&conv, message(&format!("{name}{i}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for follower in &mut followers {
        follow_until(follower, 199).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    for raw in &mut raws {
        let ids = drain_ids(raw);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }
}

#[tokio::test]
async fn a_notice_reaches_every_node_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = db.node("a", Duration::from_secs(1)).await;
    let b = db.node("b", Duration::from_secs(1)).await;
    let conv = ConversationId::generate();
    let (mut on_a, mut on_b) = (a.notifier.subscribe(&conv), b.notifier.subscribe(&conv));

    a.notifier
        .publish(&conv, LogItem::Notice(Arc::from(r#"{"status": "from a"}"#)));
    assert_eq!(&*next_notice(&mut on_a).await, r#"{"status": "from a"}"#);
    assert_eq!(&*next_notice(&mut on_b).await, r#"{"status": "from a"}"#);
    // The same notice again is a second notice, not folded into the first.
    a.notifier
        .publish(&conv, LogItem::Notice(Arc::from(r#"{"status": "from a"}"#)));
    assert_eq!(&*next_notice(&mut on_a).await, r#"{"status": "from a"}"#);
    assert_eq!(&*next_notice(&mut on_b).await, r#"{"status": "from a"}"#);
    b.notifier
        .publish(&conv, LogItem::Notice(Arc::from(r#"{"status": "from b"}"#)));
    assert_eq!(&*next_notice(&mut on_b).await, r#"{"status": "from b"}"#);
    assert_eq!(&*next_notice(&mut on_a).await, r#"{"status": "from b"}"#);
    stays_quiet(&mut on_a).await;
    stays_quiet(&mut on_b).await;

    // Too large for a notification: delivered on its own node only.
    let large: Arc<str> = Arc::from(format!(r#"{{"status": "{}"}}"#, "x".repeat(8000)));
    a.notifier.publish(&conv, LogItem::Notice(large.clone()));
    assert_eq!(next_notice(&mut on_a).await, large);
    stays_quiet(&mut on_b).await;
}

#[tokio::test]
async fn events_appended_while_a_listener_is_down_arrive_once_it_is_back() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // No periodic check to speak of: only the catch-up on reconnecting can deliver.
    let a = db.node("a", Duration::from_secs(3600)).await;
    // B connects as a role of its own, so it alone can be kept out.
    let b_url = db.url_as_new_role("b").await;
    let b = db.node_at(&b_url, "b", Duration::from_secs(3600)).await;
    let conv = ConversationId::generate();
    a.store
        .create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    let mut follower = Follower::new(b.log.clone(), conv.clone(), None);
    for i in 0..5 {
        a.log.append(&conv, message(&format!("{i}"))).await.unwrap();
    }
    follow_until(&mut follower, 4).await;

    // Keep B's listener from reconnecting until the events are in.
    let before = db.listener_pids("b").await;
    assert_eq!(before.len(), 1);
    db.allow_logins("b", false).await;
    assert_eq!(db.kill_listener("b").await, 1);
    for i in 5..25 {
        a.log.append(&conv, message(&format!("{i}"))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(follower.try_next().is_none(), "B cannot have heard yet");
    db.allow_logins("b", true).await;

    follow_until(&mut follower, 24).await;
    let after = db.listener_pids("b").await;
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "B listens on a new connection");
    // And it hears new events again.
    a.log.append(&conv, message("25")).await.unwrap();
    follow_until(&mut follower, 25).await;
}

#[tokio::test]
async fn an_event_nobody_announced_is_found_by_the_periodic_check() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = db.node("a", Duration::from_secs(3600)).await;
    let b = db.node("b", Duration::from_millis(200)).await;
    let conv = ConversationId::generate();
    a.store
        .create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    let mut follower = Follower::new(b.log.clone(), conv.clone(), None);
    let mut raw = b.notifier.subscribe(&conv);
    let first = a.log.append(&conv, message("announced")).await.unwrap();
    follow_until(&mut follower, 0).await;
    // B has handled the notification (else its catch-up could find the next event too).
    match tokio::time::timeout(PATIENCE, raw.recv()).await {
        Ok(Ok(LogItem::Event(event))) => assert_eq!(event.id, EventId(0)),
        other => panic!("{other:?}"),
    }

    // An append whose notification is lost: written as the store writes, without the NOTIFY.
    let mut json: serde_json::Value = serde_json::from_str(&first.json).unwrap();
    json["id"] = 1.into();
    let mut tx = a.store.pool().begin().await.unwrap();
    sqlx::query("UPDATE conversations SET next_event_id = next_event_id + 1 WHERE id = $1")
        .bind(conv.as_str())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO events (conversation_id, id, json) VALUES ($1, 1, $2)")
        .bind(conv.as_str())
        .bind(json.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    follow_until(&mut follower, 1).await;
    // Later appends carry on from it.
    let next = a.log.append(&conv, message("after")).await.unwrap();
    assert_eq!(next.id, EventId(2));
    follow_until(&mut follower, 2).await;
}

#[tokio::test]
async fn a_node_name_with_whitespace_is_refused() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = db.store().await;
    for name in ["", "a b"] {
        let refused = PgNotifier::start(store.clone(), PgNotifierConfig::new(name, 16)).await;
        assert!(matches!(refused, Err(StoreError::Setup(_))), "{name:?}");
    }
}

#[tokio::test]
async fn a_listener_killed_and_back_at_once_misses_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = db.node("a", Duration::from_secs(3600)).await;
    let b = db.node("b", Duration::from_secs(3600)).await;
    let conv = ConversationId::generate();
    a.store
        .create_conversation(ConversationRecord::new(conv.clone()))
        .await
        .unwrap();
    let mut follower = Follower::new(b.log.clone(), conv.clone(), None);
    for round in 0..3u64 {
        assert_eq!(db.kill_listener("b").await, 1);
        for i in 0..10 {
            a.log
                .append(&conv, message(&format!("{round}.{i}")))
                .await
                .unwrap();
        }
        follow_until(&mut follower, round * 10 + 9).await;
        // The next round kills the new connection, not a dying one.
        while db.listener_pids("b").await.len() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
