//! Which failures are retried, how long the client waits, what the agent is told while it
//! waits, and that the key never shows in an error.

use std::time::{Duration, Instant};

use ohd_llm::{LlmError, LlmSettings, connect};
use ohd_scripted_llm::{Script, Turn};

use super::common::*;

#[tokio::test]
async fn rate_limit_waits_out_retry_after_then_succeeds() {
    let (root, server) = serve(vec![
        Turn::error(429).with_retry_after(1),
        Turn::text("made it"),
    ])
    .await;
    let retries = Retries::default();
    let started = Instant::now();

    let answer = connect(&openai(&root, true))
        .unwrap()
        .complete(&first_turn("hi"), &retries)
        .await
        .unwrap();

    assert_eq!(answer.text, "made it");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let seen = retries.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (attempt, wait, reason) = &seen[0];
    assert_eq!((*attempt, *wait), (1, Duration::from_secs(1)));
    assert!(
        matches!(reason, LlmError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_secs(1)),
        "{reason:?}"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn server_error_is_retried_with_backoff() {
    for stream in [true, false] {
        let (root, server) = serve(vec![Turn::error(500), Turn::text("recovered")]).await;
        let retries = Retries::default();

        let answer = connect(&openai(&root, stream))
            .unwrap()
            .complete(&first_turn("hi"), &retries)
            .await
            .unwrap();

        assert_eq!(answer.text, "recovered");
        let seen = retries.seen();
        assert_eq!(seen.len(), 1);
        assert!(
            matches!(seen[0].2, LlmError::Server { status: 500, .. }),
            "{:?}",
            seen[0].2
        );
        // The test's backoff starts at 20 ms, with jitter down to half of it.
        assert!(seen[0].1 >= Duration::from_millis(10) && seen[0].1 <= Duration::from_millis(20));
        assert_eq!(server.requests().len(), 2);
    }
}

#[tokio::test]
async fn anthropic_overload_is_retried() {
    let (root, _server) = serve(vec![Turn::error(529), Turn::text("back")]).await;
    let retries = Retries::default();

    let answer = connect(&anthropic(&root, true))
        .unwrap()
        .complete(&first_turn("hi"), &retries)
        .await
        .unwrap();

    assert_eq!(answer.text, "back");
    assert!(matches!(
        retries.seen()[0].2,
        LlmError::ServiceUnavailable(_)
    ));
}

#[tokio::test]
async fn retries_run_out_and_the_last_error_is_returned() {
    let (root, server) = serve_script(Script::new(vec![Turn::error(503)]).repeating_last()).await;
    let settings = LlmSettings {
        max_retries: 2,
        ..openai(&root, true)
    };
    let retries = Retries::default();

    let err = connect(&settings)
        .unwrap()
        .complete(&first_turn("hi"), &retries)
        .await
        .unwrap_err();

    assert!(matches!(err, LlmError::ServiceUnavailable(_)), "{err:?}");
    assert_eq!(err.status_id(), "STATUS$ERROR_LLM_SERVICE_UNAVAILABLE");
    let attempts: Vec<u32> = retries.seen().iter().map(|r| r.0).collect();
    assert_eq!(attempts, [1, 2]);
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn unauthorized_fails_at_once_and_never_shows_the_key() {
    for settings in [openai as fn(&str, bool) -> LlmSettings, anthropic] {
        // The scripted server echoes the key it was sent, as OpenAI does.
        let (root, server) = serve(vec![Turn::error(401), Turn::text("never")]).await;
        let retries = Retries::default();

        let err = connect(&settings(&root, true))
            .unwrap()
            .complete(&first_turn("hi"), &retries)
            .await
            .unwrap_err();

        assert!(matches!(err, LlmError::Authentication(_)), "{err:?}");
        assert_eq!(err.status_id(), "STATUS$ERROR_LLM_AUTHENTICATION");
        assert!(retries.seen().is_empty());
        assert_eq!(server.requests().len(), 1);
        assert!(!err.to_string().contains(KEY), "{err}");
        assert!(!format!("{err:?}").contains(KEY), "{err:?}");
        assert!(
            err.to_string().contains("Incorrect API key provided"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn context_length_400_is_classified_and_not_retried() {
    let message = "This model's maximum context length is 8192 tokens. However, your messages \
                   resulted in 9001 tokens. Please reduce the length of the messages.";
    let (root, server) = serve(vec![Turn::error(400).with_message(message)]).await;
    let retries = Retries::default();

    let err = connect(&openai(&root, true))
        .unwrap()
        .complete(&first_turn("hi"), &retries)
        .await
        .unwrap_err();

    assert!(matches!(err, LlmError::ContextWindowExceeded(_)), "{err:?}");
    assert!(err.to_string().contains("maximum context length"));
    assert!(retries.seen().is_empty());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_a_retried_network_error() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = LlmSettings {
        max_retries: 1,
        ..openai(&format!("http://127.0.0.1:{port}"), true)
    };
    let retries = Retries::default();

    let err = connect(&settings)
        .unwrap()
        .complete(&first_turn("hi"), &retries)
        .await
        .unwrap_err();

    assert!(matches!(err, LlmError::Network(_)), "{err:?}");
    assert_eq!(retries.seen().len(), 1);
}

#[test]
fn settings_debug_hides_the_key() {
    let settings = openai("http://127.0.0.1:1", true);
    let shown = format!("{settings:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("[redacted]"));
}

#[test]
fn hosted_providers_need_a_key_and_unknown_prefixes_a_base_url() {
    let no_key = LlmSettings {
        model: "anthropic/claude-sonnet-4-5".into(),
        ..LlmSettings::default()
    };
    assert!(matches!(connect(&no_key), Err(LlmError::NotConfigured(_))));
    let unknown = LlmSettings {
        model: "mystery/model-1".into(),
        api_key: Some(KEY.into()),
        ..LlmSettings::default()
    };
    assert!(matches!(connect(&unknown), Err(LlmError::NotConfigured(_))));
    let local = LlmSettings {
        model: "openai/llama3".into(),
        base_url: Some("http://localhost:11434/v1".into()),
        ..LlmSettings::default()
    };
    assert_eq!(connect(&local).unwrap().model(), "openai/llama3");
}
