//! Bad input gets a clear error to its sender; nothing stored is lost and other clients go on.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

async fn expect_error(client: &mut RawClient, code: &str) -> Value {
    let event = client.next_event().await.expect("no error event");
    assert_eq!(event["error"], true, "{event}");
    assert_eq!(event["code"], code, "{event}");
    assert!(!event["message"].as_str().unwrap().is_empty());
    assert!(event.get("id").is_none(), "errors are not stored events");
    event
}

#[tokio::test]
async fn every_bad_input_gets_an_error_and_disturbs_no_one() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut bystander = joined(&ohd, &conv, "-1").await;
    let mut bad = joined(&ohd, &conv, "-1").await;
    bad.send(&user_message("before")).await;
    assert_eq!(bad.next_event().await.unwrap()["id"], 0);

    let cases: Vec<(String, &str)> = vec![
        ("42not json".into(), "INVALID_PACKET"),
        ("42[\"oh_user_action\",{bad".into(), "INVALID_PACKET"),
        ("4X".into(), "INVALID_PACKET"),
        // Not even Engine.IO: an unknown packet type, and an empty frame.
        ("9oops".into(), "INVALID_PACKET"),
        ("".into(), "INVALID_PACKET"),
        ("42{\"a\":1}".into(), "INVALID_PACKET"),
        ("42[\"oh_user_action\",\"just a string\"]".into(), "INVALID_ACTION"),
        ("42[\"oh_user_action\"]".into(), "INVALID_ACTION"),
        ("42[\"oh_user_action\",{\"action\":\"delete_everything\",\"args\":{}}]".into(), "UNKNOWN_ACTION"),
        ("42[\"oh_user_action\",{\"type\":\"shout\",\"message\":\"x\"}]".into(), "UNKNOWN_ACTION"),
        ("42[\"oh_user_action\",{\"action\":\"message\",\"args\":{\"content\":42}}]".into(), "INVALID_ARGS"),
        ("42[\"oh_user_action\",{\"type\":\"message\",\"message\":[1]}]".into(), "INVALID_ARGS"),
        ("42[\"oh_user_action\",{\"action\":\"change_agent_state\",\"args\":{\"agent_state\":\"finished\"}}]".into(), "INVALID_AGENT_STATE"),
        ("42[\"oh_user_action\",{\"action\":\"run\",\"args\":{}}]".into(), "INVALID_ARGS"),
        ("42[\"no_such_event\",{}]".into(), "UNKNOWN_EVENT"),
        (format!("42[\"oh_user_action\",{{\"type\":\"message\",\"message\":\"{}\"}}]", "y".repeat(4 * 1024 * 1024 + 10)), "PAYLOAD_TOO_LARGE"),
    ];
    for (frame, code) in &cases {
        bad.send(frame).await;
        expect_error(&mut bad, code).await;
    }
    // An ack, when asked for, carries the error too.
    bad.send("4217[\"oh_user_action\",{\"action\":\"bogus\"}]")
        .await;
    expect_error(&mut bad, "UNKNOWN_ACTION").await;
    let ack = bad.next_text().await;
    assert!(
        ack.as_ref()
            .is_some_and(|a| a.starts_with("4317[{") && a.contains("UNKNOWN_ACTION")),
        "{ack:?}"
    );
    // A stored action is acked with no error; its event comes through delivery, in any order
    // relative to the ack.
    bad.send("4218[\"oh_user_action\",{\"action\":\"message\",\"args\":{\"content\":\"acked\"}}]")
        .await;
    let mut got_ack = false;
    let mut got_event = false;
    while !(got_ack && got_event) {
        let text = bad.next_text().await.expect("ack or event missing");
        if text == "4318[]" {
            got_ack = true;
        } else if let Some(e) = parse_oh_event(&text) {
            assert_eq!(e["args"]["content"], "acked");
            got_event = true;
        }
    }

    // The same socket still works, the bystander saw only real events, and the store has both.
    bad.send(&user_message("after")).await;
    let after = bad.next_event().await.unwrap();
    assert_eq!(after["args"]["content"], "after");
    let seen = bystander.events(3).await;
    assert_eq!(ids(&seen), vec![0, 1, 2]);
    assert!(seen.iter().all(|e| e.get("error").is_none()));
    assert_eq!(
        bystander
            .next_event_within(Duration::from_millis(300))
            .await,
        None
    );
    assert_eq!(ohd.events(&conv).await, seen);
}

#[tokio::test]
async fn a_frame_far_beyond_the_limit_closes_only_that_connection() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut bystander = joined(&ohd, &conv, "-1").await;
    let mut huge = joined(&ohd, &conv, "-1").await;
    // The server may close the connection while the frame is still being sent.
    if huge
        .try_send(&seed_message(&"z".repeat(9 * 1024 * 1024)))
        .await
    {
        assert_eq!(huge.next_event().await, None, "the connection stayed open");
    }
    bystander.send(&user_message("still here")).await;
    assert_eq!(
        bystander.next_event().await.unwrap()["args"]["content"],
        "still here"
    );
}

#[tokio::test]
async fn missing_unknown_and_malformed_conversations_are_refused_at_connect() {
    let ohd = Ohd::start().await;
    let cases = [
        (
            "latest_event_id=-1",
            "No conversation_id in query params",
            None,
        ),
        (
            "conversation_id=0123456789abcdef0123456789abcdef",
            "conversation 0123456789abcdef0123456789abcdef not found",
            Some("CONVERSATION$NOT_FOUND"),
        ),
        (
            "conversation_id=..%2F..%2Fetc",
            "invalid conversation id",
            Some("CONVERSATION$INVALID_ID"),
        ),
    ];
    for (query, message, msg_id) in cases {
        let mut client = RawClient::open(&ohd.ws_url(query)).await;
        let reply = client.connect("").await;
        let body: Value = serde_json::from_str(reply.strip_prefix("44").expect(&reply)).unwrap();
        assert!(
            body["message"].as_str().unwrap().starts_with(message),
            "{reply}"
        );
        assert_eq!(body["data"]["msg_id"].as_str(), msg_id, "{reply}");
    }
    let conv = ohd.create_conversation().await;
    let mut client = RawClient::open(&ohd.ws_url(&format!(
        "conversation_id={conv}&providers_set=github,myhub"
    )))
    .await;
    let reply = client.connect("").await;
    assert!(
        reply.starts_with("44") && reply.contains("myhub"),
        "{reply}"
    );
    let mut client = RawClient::open(&ohd.ws_url(&format!(
        "conversation_id={conv}&providers_set=github,gitlab"
    )))
    .await;
    assert!(client.connect("").await.starts_with("40"));
    // Another namespace is refused, as socket.io servers do.
    client.send("40/admin,").await;
    assert!(client.next_text().await.unwrap().starts_with("44/admin,"));
}

#[tokio::test]
async fn a_conversation_deleted_under_a_client_gives_an_error_not_a_crash() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut client = RawClient::open(&ohd.ws_url(&format!("conversation_id={conv}"))).await;
    assert!(client.connect("").await.starts_with("40"));
    ohd.http
        .delete(ohd.url(&format!("/api/conversations/{conv}")))
        .send()
        .await
        .unwrap();
    client.send(&user_message("into the void")).await;
    expect_error(&mut client, "CONVERSATION$NOT_FOUND").await;
    assert_eq!(ohd.get("/alive").await.0, 200);
}

#[tokio::test]
async fn a_client_that_vanishes_mid_message_leaves_the_server_and_store_intact() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    fill(&ohd, &conv, 5).await;
    // Half a websocket frame, then the TCP connection drops.
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(&ohd.addr).await.unwrap();
    tcp.write_all(format!("GET /socket.io/?EIO=4&transport=websocket&conversation_id={conv} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", ohd.addr).as_bytes()).await.unwrap();
    tcp.write_all(&[0x81, 0xFE, 0x10, 0x00, 1, 2, 3, 4, b'4', b'2'])
        .await
        .unwrap();
    drop(tcp);
    // And a polling client that posts a truncated body.
    let _ = ohd
        .http
        .post(ohd.url("/socket.io/?EIO=4&transport=polling&sid=nonexistent"))
        .body("42[\"oh_user_ac")
        .send()
        .await;
    let mut client = RawClient::open(&ohd.ws_url(&format!("conversation_id={conv}"))).await;
    assert!(client.connect("").await.starts_with("40"));
    assert_eq!(ids(&client.events(5).await), vec![0, 1, 2, 3, 4]);
}
