//! The Engine.IO transport itself, in raw HTTP and websocket frames: its errors, long-polling,
//! the upgrade to a websocket, and the heartbeat.

use crate::common::*;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A long-polling client, request by request.
struct Polling<'a> {
    ohd: &'a Ohd,
    query: String,
    sid: String,
}

impl<'a> Polling<'a> {
    /// The handshake: the open packet, which offers the websocket upgrade.
    async fn open(ohd: &'a Ohd, conversation: &str) -> Polling<'a> {
        let query = format!("conversation_id={conversation}&latest_event_id=-1");
        let response = ohd
            .http
            .get(ohd.url(&format!("/socket.io/?EIO=4&transport=polling&{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        let open: Value = serde_json::from_str(body.strip_prefix('0').unwrap()).unwrap();
        assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
        Polling {
            ohd,
            query,
            sid: open["sid"].as_str().unwrap().to_owned(),
        }
    }

    fn url(&self) -> String {
        self.ohd.url(&format!(
            "/socket.io/?EIO=4&transport=polling&sid={}&{}",
            self.sid, self.query
        ))
    }

    async fn get(&self) -> (u16, String) {
        let response = self.ohd.http.get(self.url()).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn post(&self, body: &str) -> (u16, String) {
        let response = self
            .ohd
            .http
            .post(self.url())
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// GETs until `want` events have arrived; returns the packets seen.
    async fn events(&self, want: usize) -> Vec<Value> {
        let mut events = Vec::new();
        while events.len() < want {
            let (status, body) = tokio::time::timeout(WAIT, self.get()).await.unwrap();
            assert_eq!(status, 200, "{body}");
            events.extend(body.split('\u{1e}').filter_map(parse_oh_event));
        }
        events
    }
}

async fn engine_error(ohd: &Ohd, method: reqwest::Method, query: &str) -> (u16, Value) {
    let response = ohd
        .http
        .request(method, ohd.url(&format!("/socket.io/?{query}")))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn requests_that_break_the_engine_io_protocol_get_its_json_errors() {
    let ohd = Ohd::start().await;
    let get = reqwest::Method::GET;
    let cases = [
        (get.clone(), "EIO=3&transport=polling", 5),
        (get.clone(), "transport=polling", 5),
        (get.clone(), "EIO=4&transport=carrier-pigeon", 0),
        (get.clone(), "EIO=4&transport=polling&sid=nonexistent", 1),
        (reqwest::Method::POST, "EIO=4&transport=polling", 2),
        // A websocket request without the websocket handshake headers.
        (get.clone(), "EIO=4&transport=websocket", 3),
    ];
    for (method, query, code) in cases {
        let (status, body) = engine_error(&ohd, method, query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["code"], code, "{query}: {body}");
        assert!(body["message"].is_string());
    }
    assert_eq!(ohd.get("/alive").await.0, 200);
}

#[tokio::test]
async fn a_large_event_reaches_websocket_and_polling_clients_whole() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut ws = joined(&ohd, &conv, "-1").await;
    let polling = Polling::open(&ohd, &conv).await;
    assert_eq!(polling.post("40").await.0, 200);
    // Two bytes a character, about 1.2 MB of JSON: a frame with a 64-bit length, far beyond
    // the transport's write buffer; then a small one after it.
    let large = "é".repeat(600_000);
    ws.send(&user_message(&large)).await;
    ws.send(&user_message("after")).await;
    for expected in [large.as_str(), "after"] {
        let event = ws.next_event().await.unwrap();
        assert_eq!(event["args"]["content"].as_str(), Some(expected));
    }
    let events = polling.events(2).await;
    assert_eq!(ids(&events), vec![0, 1]);
    assert_eq!(events[0]["args"]["content"].as_str(), Some(large.as_str()));
    assert_eq!(events[1]["args"]["content"], "after");
}

#[tokio::test]
async fn long_polling_carries_a_session_and_a_second_concurrent_poll_ends_it() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let client = Polling::open(&ohd, &conv).await;
    assert_eq!(client.post("40").await, (200, "ok".to_owned()));
    let (status, connected) = client.get().await;
    assert_eq!(status, 200);
    assert!(connected.starts_with("40{\"sid\""), "{connected}");
    // Two messages in one body are two actions, stored in order.
    let body = format!("{}\u{1e}{}", user_message("one"), user_message("two"));
    assert_eq!(client.post(&body).await.0, 200);
    let events = client.events(2).await;
    assert_eq!(ids(&events), vec![0, 1]);
    assert_eq!(events[1]["args"]["content"], "two");

    // A poll waits; a second poll at the same time is a protocol error and ends the session.
    let first = tokio::spawn({
        let url = client.url();
        let http = ohd.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !first.is_finished(),
        "a poll with nothing to send must wait"
    );
    assert_eq!(client.get().await.0, 400);
    // The waiting poll is told the session closed, and the session is gone.
    let (status, body) = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "1"));
    let (status, body) = engine_error(
        &ohd,
        reqwest::Method::GET,
        &format!("EIO=4&transport=polling&sid={}", client.sid),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (400, 1.into()));
    assert_eq!(ohd.events(&conv).await, events);
}

#[tokio::test]
async fn a_polling_session_upgrades_to_a_websocket_without_losing_or_repeating_events() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let client = Polling::open(&ohd, &conv).await;
    client.post("40").await;
    assert!(client.get().await.1.starts_with("40{"));
    client.post(&user_message("before")).await;
    let mut seen = client.events(1).await;

    // The client's poll is pending while it probes the websocket, as engine.io clients do.
    let pending = tokio::spawn({
        let url = client.url();
        let http = ohd.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    });
    let url = ohd.ws_url(&format!("sid={}&{}", client.sid, client.query));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // Sent while the probe runs: still carried, by the poll or after the switch.
    client.post(&user_message("during")).await;
    ws.send(Message::text("2probe")).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert_eq!(reply.unwrap().unwrap(), Message::text("3probe"));
    // The server ends the pending poll (with a noop if it had nothing else) so the client can
    // switch.
    let last_poll = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    seen.extend(last_poll.split('\u{1e}').filter_map(parse_oh_event));
    ws.send(Message::text("5")).await.unwrap();
    ws.send(Message::text(user_message("after"))).await.unwrap();
    while seen.len() < 3 {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            seen.extend(parse_oh_event(text.as_str()));
        }
    }
    assert_eq!(ids(&seen), vec![0, 1, 2]);
    assert_eq!(summary(&seen), summary(&ohd.events(&conv).await));
    // Polling is over for this session.
    assert_eq!(client.get().await.0, 400);
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped_and_one_that_answers_stays() {
    let mut options = Options::new();
    options.config_toml = Some("[server]\nping_interval_ms = 300\nping_timeout_ms = 1000\n".into());
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let query = format!("conversation_id={conv}&latest_event_id=-1");

    // Silent: reads what it is sent, never answers.
    let (mut silent, _) = tokio_tungstenite::connect_async(ohd.ws_url(&query))
        .await
        .unwrap();
    silent.send(Message::text("40")).await.unwrap();
    // Answers every ping (RawClient does).
    let mut alive = joined(&ohd, &conv, "-1").await;
    // A polling session that never polls again.
    let idle_poller = Polling::open(&ohd, &conv).await;

    let mut pings = 0;
    let silent_dropped = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => pings += 1,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            }
        }
    });
    // Meanwhile the other client reads (answering pings) for several ping intervals.
    let (dropped, alive_read) = tokio::join!(
        silent_dropped,
        alive.next_text_within(Duration::from_millis(2500))
    );
    assert!(dropped.is_ok(), "a client that never answers is dropped");
    assert_eq!(pings, 1, "dropped after one unanswered ping");
    assert_eq!(
        alive_read, None,
        "nothing but pings for the answering client"
    );
    alive.send(&user_message("still here")).await;
    let event = alive.next_event().await.unwrap();
    assert_eq!(event["args"]["content"], "still here");
    let (status, body) = idle_poller.get().await;
    assert_eq!(status, 400, "the silent poller's session is gone: {body}");
}

#[tokio::test]
async fn a_client_that_never_joins_is_closed_after_the_connect_timeout() {
    let mut options = Options::new();
    options.config_toml =
        Some("[server]\nping_interval_ms = 200\nconnect_timeout_ms = 800\n".into());
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let started = std::time::Instant::now();
    // Opens the transport, answers pings and sends pongs unasked besides (which must not put
    // off the heartbeat that checks the deadline), never sends CONNECT.
    let (mut lurker, _) = tokio_tungstenite::connect_async(ohd.ws_url(""))
        .await
        .unwrap();
    let poller = Polling::open(&ohd, &conv).await;
    let mut member = joined(&ohd, &conv, "-1").await;
    let mut unasked = tokio::time::interval(Duration::from_millis(50));
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            tokio::select! {
                frame = lurker.next() => match frame {
                    Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                        let _ = lurker.send(Message::text("3")).await;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    _ => {}
                },
                _ = unasked.tick() => {
                    let _ = lurker.send(Message::text("3")).await;
                }
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the lurker was never closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "closed after {waited:?}"
    );
    // The poller never joins either, though it answers pings: its session ends too.
    let poller_closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (status, body) = poller.get().await;
            if status == 400 || body.split('\u{1e}').any(|p| p == "1") {
                return;
            }
            if body.split('\u{1e}').any(|p| p == "2") {
                poller.post("3").await;
            }
        }
    })
    .await;
    assert!(
        poller_closed.is_ok(),
        "the never-joined poller was never closed"
    );
    // The client that joined is still served.
    member.send(&user_message("still here")).await;
    assert_eq!(
        member.next_event().await.unwrap()["args"]["content"],
        "still here"
    );
}
