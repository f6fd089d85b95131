//! Appends per second, SQLite against PostgreSQL, in one run: `cargo bench -p ohd-store --bench
//! appends`. Each case runs writers for a few seconds, each appending one event at a time (as
//! an agent or a client does) and waiting for its commit; writers either have a conversation
//! each, or all share one (the per-conversation order is then the bottleneck).
//!
//! PostgreSQL is the server at `OHD_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a database made for the run and dropped after.
//! `OHD_BENCH_SECONDS` sets each case's length (default 5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ohd_protocol::action::MessageArgs;
use ohd_protocol::{Action, ConversationId, NewEvent, Source};
use ohd_store::sqlite::{Durability, SqliteStore};
use ohd_store::testing::TestDatabase;
use ohd_store::{ConversationRecord, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn message(i: u64) -> NewEvent {
    NewEvent::action(
        Source::User,
        Action::Message(MessageArgs::user(format!(
            "message {i}: {}",
            "x".repeat(180)
        ))),
    )
}

struct Figures {
    appends_per_s: f64,
    p50_us: u64,
    p99_us: u64,
}

async fn run(store: Arc<dyn Store>, writers: usize, shared: bool, length: Duration) -> Figures {
    let mut conversations = Vec::new();
    for _ in 0..(if shared { 1 } else { writers }) {
        let id = ConversationId::generate();
        store
            .create_conversation(ConversationRecord::new(id.clone()))
            .await
            .unwrap();
        conversations.push(id);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let conversation = conversations[if shared { 0 } else { w }].clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while started.elapsed() < length {
                let sent = Instant::now();
                store.append(&conversation, vec![message(i)]).await.unwrap();
                latencies.push(sent.elapsed().as_micros() as u64);
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        appends_per_s: latencies.len() as f64 / elapsed,
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

#[tokio::main]
async fn main() {
    let length = Duration::from_secs(
        std::env::var("OHD_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let Some(db) = TestDatabase::create().await else {
        eprintln!("appends: this benchmark compares with PostgreSQL, and there is none");
        std::process::exit(1);
    };
    let pg: Arc<dyn Store> = Arc::new(db.store().await);
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("ohd.db"), Durability::Normal)
            .await
            .unwrap(),
    );
    println!(
        "| writers | conversations | SQLite appends/s | PostgreSQL appends/s | PG / SQLite | SQLite p50 / p99 | PostgreSQL p50 / p99 |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    for (writers, shared) in [(1, false), (16, false), (64, false), (16, true)] {
        let s = run(sqlite.clone(), writers, shared, length).await;
        let p = run(pg.clone(), writers, shared, length).await;
        println!(
            "| {writers} | {} | {:.0} | {:.0} | {:.2}x | {} / {} µs | {} / {} µs |",
            if shared { "one, shared" } else { "one each" },
            s.appends_per_s,
            p.appends_per_s,
            p.appends_per_s / s.appends_per_s,
            s.p50_us,
            s.p99_us,
            p.p50_us,
            p.p99_us,
        );
    }
    // Its connections go before the database is dropped with `db`.
    drop(pg);
}
