//! Every `websocat` command of the user's document, as raw frames over a plain websocket.

use crate::common::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// What `echo ... | websocat URL` does: sends each line as a text frame, then, at the end of its
/// input, a Close, and prints every text frame that arrives until the server closes. The server
/// must answer with its own Close (a clean closing handshake).
async fn websocat_pipe(url: &str, lines: &[&str]) -> Vec<String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for line in lines {
        ws.send(Message::text(*line)).await.unwrap();
    }
    ws.send(Message::Close(None)).await.unwrap();
    let mut printed = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => printed.push(text.to_string()),
            Ok(Some(Ok(Message::Close(_))) | None) => return printed,
            Ok(Some(Err(e))) => panic!("no clean close ({e}); printed: {printed:?}"),
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("the server did not close; printed so far: {printed:?}"),
        }
    }
}

#[tokio::test]
async fn echo_40_piped_into_websocat_prints_the_ack_and_every_stored_event_before_closing() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    fill(&ohd, &conv, 3).await;
    let url = ohd.ws_url(&format!("conversation_id={conv}&latest_event_id=-1"));
    // echo "40{}" | websocat URL: the Close follows the CONNECT at once.
    let printed = websocat_pipe(&url, &["40{}"]).await;
    assert!(printed[0].starts_with("0{\"sid\":"), "{printed:?}");
    assert!(printed[1].starts_with("40{\"sid\":"), "{printed:?}");
    let events: Vec<_> = printed.iter().filter_map(|p| parse_oh_event(p)).collect();
    assert_eq!(ids(&events), vec![0, 1, 2], "{printed:?}");
}

#[tokio::test]
async fn the_one_liner_piped_into_websocat_prints_its_own_message_before_closing() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let url = ohd.ws_url(&format!("conversation_id={conv}&latest_event_id=-1"));
    let line = seed_message("Hello, agent!");
    let printed = websocat_pipe(&url, &[&line]).await;
    assert!(printed[1].starts_with("40{\"sid\":"), "{printed:?}");
    let events: Vec<_> = printed.iter().filter_map(|p| parse_oh_event(p)).collect();
    assert_eq!(events.len(), 1, "{printed:?}");
    assert_eq!(events[0]["message"], "Hello, agent!");
    assert_eq!(ohd.events(&conv).await, events);
}

#[tokio::test]
async fn echo_40_prints_the_connect_ack_and_the_stored_events() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    fill(&ohd, &conv, 2).await;
    // echo "40{}" | websocat "ws://.../socket.io/?EIO=4&transport=websocket&conversation_id=...&latest_event_id=-1"
    let mut client =
        RawClient::open(&ohd.ws_url(&format!("conversation_id={conv}&latest_event_id=-1"))).await;
    let ack = client.connect("{}").await;
    assert!(ack.starts_with("40{\"sid\":"), "{ack}");
    let events = client.events(2).await;
    assert_eq!(ids(&events), vec![0, 1]);
    assert_eq!(events[0]["args"]["content"], "message 0");
}

#[tokio::test]
async fn the_one_liner_sends_a_message_without_a_connect_packet() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let url = ohd.ws_url(&format!("conversation_id={conv}&latest_event_id=-1"));
    let mut watcher = joined(&ohd, &conv, "-1").await;

    // echo '42["oh_user_action",{"type":"message","source":"user","message":"Hello, agent!"}]' | websocat URL
    let mut one_liner = RawClient::open(&url).await;
    one_liner.send(&seed_message("Hello, agent!")).await;
    one_liner.close().await;

    let event = watcher.next_event().await.expect("the watcher saw nothing");
    assert_eq!(event["id"], 0);
    assert_eq!(event["source"], "user");
    assert_eq!(event["type"], "message");
    assert_eq!(event["message"], "Hello, agent!");
    assert_eq!(event["action"], "message");
    assert_eq!(event["args"]["content"], "Hello, agent!");
    assert!(event["timestamp"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(ohd.events(&conv).await, vec![event]);
}

#[tokio::test]
async fn the_one_liner_gets_the_implicit_connect_ack_then_its_own_message() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut client =
        RawClient::open(&ohd.ws_url(&format!("conversation_id={conv}&latest_event_id=-1"))).await;
    client.send(&seed_message("first")).await;
    let ack = client.next_text().await.unwrap();
    assert!(ack.starts_with("40{\"sid\":"), "{ack}");
    let event = client.next_event().await.unwrap();
    assert_eq!(event["message"], "first");
}

#[tokio::test]
async fn a_persistent_connection_sees_what_another_terminal_sends() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let url = ohd.ws_url(&format!("conversation_id={conv}&latest_event_id=-1"));
    // websocat -v URL (then the user types 40)
    let mut persistent = joined(&ohd, &conv, "-1").await;
    // In another terminal: echo '42["oh_user_action",...]' | websocat URL
    let mut other = RawClient::open(&url).await;
    other
        .send(&seed_message("Can you help me with my project?"))
        .await;
    let mine = persistent.next_event().await.unwrap();
    assert_eq!(mine["message"], "Can you help me with my project?");
    // The sender, implicitly connected, gets it too.
    let theirs = other.next_event().await.unwrap();
    assert_eq!(theirs, mine);
    // And the OpenHands form works the same way.
    other.send(&user_message("second")).await;
    assert_eq!(
        persistent.next_event().await.unwrap()["args"]["content"],
        "second"
    );
    assert_eq!(ohd.events(&conv).await.len(), 2);
    let _ = json!({});
}
