//! Replay and live delivery: every event once, in order, to every client of the conversation.

use crate::common::*;
use std::time::Duration;

#[tokio::test]
async fn replay_from_the_start_the_middle_the_end_and_past_it() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    fill(&ohd, &conv, 10).await;

    let mut from_start = joined(&ohd, &conv, "-1").await;
    assert_eq!(
        ids(&from_start.events(10).await),
        (0..10).collect::<Vec<_>>()
    );

    let mut from_middle = joined(&ohd, &conv, "5").await;
    assert_eq!(ids(&from_middle.events(4).await), vec![6, 7, 8, 9]);

    let mut not_a_number = joined(&ohd, &conv, "abc").await;
    assert_eq!(not_a_number.events(10).await[0]["id"], 0);

    for latest in ["9", "999"] {
        let mut at_end = joined(&ohd, &conv, latest).await;
        assert_eq!(
            at_end.next_event_within(Duration::from_millis(300)).await,
            None
        );
        // ...and then live events continue from there.
        at_end.send(&user_message("live")).await;
        let live = at_end.next_event().await.unwrap();
        assert_eq!(live["args"]["content"], "live");
    }
    // Each later client saw the live events of the earlier ones, in order, with no gap.
    let rest = from_start.events(2).await;
    assert_eq!(ids(&rest), vec![10, 11]);
}

#[tokio::test]
async fn two_clients_see_identical_streams_while_events_race_their_connect() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut writer = joined(&ohd, &conv, "-1").await;
    // Append while the readers connect.
    for i in 0..200 {
        writer.send(&user_message(&format!("m{i}"))).await;
    }
    let mut a = joined(&ohd, &conv, "-1").await;
    for i in 200..400 {
        writer.send(&user_message(&format!("m{i}"))).await;
    }
    let mut b = joined(&ohd, &conv, "-1").await;
    for i in 400..500 {
        writer.send(&user_message(&format!("m{i}"))).await;
    }
    let seen_a = a.events(500).await;
    let seen_b = b.events(500).await;
    assert_eq!(ids(&seen_a), (0..500).collect::<Vec<_>>());
    assert_eq!(seen_a, seen_b);
    assert_eq!(seen_a, ohd.events(&conv).await);
    assert_eq!(
        a.next_event_within(Duration::from_millis(200)).await,
        None,
        "a duplicate arrived"
    );
}

#[tokio::test]
async fn conversations_are_isolated_from_each_other() {
    let ohd = Ohd::start().await;
    let one = ohd.create_conversation().await;
    let two = ohd.create_conversation().await;
    let mut in_one = joined(&ohd, &one, "-1").await;
    let mut in_two = joined(&ohd, &two, "-1").await;
    in_one.send(&user_message("for one")).await;
    in_two.send(&user_message("for two")).await;
    let a = in_one.next_event().await.unwrap();
    let b = in_two.next_event().await.unwrap();
    assert_eq!((a["id"].as_u64(), b["id"].as_u64()), (Some(0), Some(0)));
    assert_eq!(a["args"]["content"], "for one");
    assert_eq!(b["args"]["content"], "for two");
    assert_eq!(
        in_one.next_event_within(Duration::from_millis(300)).await,
        None
    );
    assert_eq!(
        in_two.next_event_within(Duration::from_millis(300)).await,
        None
    );
}

#[tokio::test]
async fn a_large_replay_streams_to_a_slow_reader_without_loss() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    fill(&ohd, &conv, 3000).await;
    let mut reader = joined(&ohd, &conv, "-1").await;
    // Read slowly at first so the server's per-client buffer fills and it has to wait for room.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = reader.events(3000).await;
    assert_eq!(ids(&events), (0..3000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_the_others_carry_on() {
    let mut options = Options::new();
    options.config_toml = Some("[server]\nslow_client_timeout_secs = 1\n".into());
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut stuck = joined(&ohd, &conv, "-1").await;
    let mut healthy = joined(&ohd, &conv, "-1").await;
    let healthy = tokio::spawn(async move { healthy.events(2000).await });
    let mut writer = joined(&ohd, &conv, "-1").await.into_writer();
    // ~40 MB of events: far more than the kernel's socket buffers hold for the stuck client.
    let big = "x".repeat(20_000);
    for i in 0..2000 {
        writer.send(&user_message(&format!("{i} {big}"))).await;
        if i % 100 == 99 {
            // Pace the writer as a real client would; a flood is refused with RATE_LIMITED.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let seen = healthy.await.unwrap();
    assert_eq!(ids(&seen), (0..2000).collect::<Vec<_>>());
    // The stuck client finds its connection closed once it reads what was already sent.
    let mut received = 0;
    while stuck
        .next_event_within(Duration::from_secs(5))
        .await
        .is_some()
    {
        received += 1;
    }
    assert!(received < 2000, "the stuck client was never cut off");
    // It resumes where it stopped, with latest_event_id, and misses nothing.
    let mut resumed = joined(&ohd, &conv, &(received as i64 - 1).to_string()).await;
    let rest = resumed.events(2000 - received).await;
    assert_eq!(
        rest.first().and_then(|e| e["id"].as_u64()),
        Some(received as u64)
    );
}

#[tokio::test]
async fn state_changes_and_terminal_commands_are_stored_as_user_actions() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client
        .send(r#"42["oh_user_action",{"action":"change_agent_state","args":{"agent_state":"paused"}}]"#)
        .await;
    client
        .send(r#"42["oh_action",{"action":"run","args":{"command":"ls -la","hidden":false}}]"#)
        .await;
    let events = client.events(2).await;
    assert_eq!(events[0]["action"], "change_agent_state");
    assert_eq!(events[0]["args"]["agent_state"], "paused");
    assert_eq!(events[0]["message"], "Agent state changed to paused");
    assert_eq!(events[1]["action"], "run");
    assert_eq!(events[1]["args"]["command"], "ls -la");
    assert_eq!(events[1]["message"], "Running command: ls -la");
    assert!(events.iter().all(|e| e["source"] == "user"));
    assert_eq!(ohd.events(&conv).await, events);
}

#[tokio::test]
async fn a_rename_is_sent_live_as_a_title_status_update_and_not_stored() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    let response = ohd
        .http
        .patch(ohd.url(&format!("/api/conversations/{conv}")))
        .json(&serde_json::json!({"title": "New title"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let notice = client.next_event().await.unwrap();
    assert_eq!(notice["status_update"], true);
    assert_eq!(notice["conversation_title"], "New title");
    assert_eq!(notice["message"], conv.as_str());
    assert!(ohd.events(&conv).await.is_empty());
}

#[tokio::test]
async fn a_burst_of_acked_actions_gets_every_ack_and_every_event() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    let n = 300u64;
    for i in 0..n {
        client
            .send(&format!(
                "42{i}[\"oh_user_action\",{{\"action\":\"message\",\"args\":{{\"content\":\"m{i}\"}}}}]"
            ))
            .await;
    }
    let mut acks = std::collections::BTreeSet::new();
    let mut events = Vec::new();
    while (acks.len() as u64) < n || (events.len() as u64) < n {
        let text = client
            .next_text()
            .await
            .expect("an ack or an event is missing");
        if let Some(id) = text.strip_prefix("43").and_then(|t| t.strip_suffix("[]")) {
            assert!(acks.insert(id.parse::<u64>().unwrap()), "ack {id} twice");
        } else if let Some(event) = parse_oh_event(&text) {
            events.push(event);
        }
    }
    assert_eq!(acks, (0..n).collect());
    assert_eq!(ids(&events), (0..n).collect::<Vec<_>>());
}
