//! Durability: `kill -9` at any moment loses nothing a client has seen; SIGTERM stops cleanly.

use crate::common::*;

#[tokio::test]
async fn kill_9_while_writing_loses_no_event_a_client_saw() {
    let mut ohd = Ohd::start().await;
    let data_dir = ohd.data_dir.clone();
    let conv = ohd.create_conversation().await;
    let mut watcher = joined(&ohd, &conv, "-1").await;
    let mut writer = joined(&ohd, &conv, "-1").await;
    for i in 0..300 {
        writer.send(&user_message(&format!("m{i}"))).await;
    }
    // Kill as soon as the watcher has seen some, while the rest are still being written.
    let mut seen = watcher.events(50).await;
    ohd.kill9();
    ohd.wait_exit().await;
    while let Some(e) = watcher
        .next_event_within(std::time::Duration::from_millis(500))
        .await
    {
        seen.push(e);
    }

    // The data directory outlives the process (the TempDir belongs to the killed `ohd`).
    let restarted = Ohd::spawn(&data_dir, &Options::new()).await;
    let stored = restarted.events(&conv).await;
    assert!(stored.len() >= seen.len());
    assert_eq!(
        &stored[..seen.len()],
        &seen[..],
        "an event a client saw was lost or changed"
    );
    assert_eq!(ids(&stored), (0..stored.len() as u64).collect::<Vec<_>>());
    // The log goes on from the next id.
    let mut again = RawClient::open(&restarted.ws_url(&format!(
        "conversation_id={conv}&latest_event_id={}",
        stored.len() - 1
    )))
    .await;
    assert!(again.connect("").await.starts_with("40"));
    again.send(&user_message("after restart")).await;
    let next = again.next_event().await.unwrap();
    assert_eq!(next["id"].as_u64(), Some(stored.len() as u64));
    drop(ohd);
}

#[tokio::test]
async fn sigterm_stops_the_server_promptly_with_clients_connected() {
    let mut ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut client =
        RawClient::open(&ohd.ws_url(&format!("conversation_id={conv}&latest_event_id=-1"))).await;
    assert!(client.connect("").await.starts_with("40"));
    let started = std::time::Instant::now();
    let status = ohd.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
}
