//! Usage and cost of completions added up into `llm_metrics`, in OpenHands' shape.

use ohd_llm::{LlmSettings, Metrics, connect};
use ohd_scripted_llm::{ScriptedUsage, Turn};
use serde_json::json;

use super::common::*;

fn usage(prompt: u64, completion: u64) -> ScriptedUsage {
    ScriptedUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..ScriptedUsage::default()
    }
}

#[tokio::test]
async fn configured_prices_accumulate_into_llm_metrics() {
    let (root, _server) = serve(vec![
        Turn::tool_call("execute_bash", json!({"command": "ls"})).with_usage(usage(1000, 200)),
        Turn::text("done").with_usage(usage(3000, 100)),
    ])
    .await;
    let settings = LlmSettings {
        model: "openai/local-coder".into(),
        input_cost_per_million: Some(2.0),
        output_cost_per_million: Some(10.0),
        ..openai(&root, true)
    };
    let client = connect(&settings).unwrap();
    let mut metrics = Metrics::new(client.model());

    let first = client.complete(&first_turn("hi"), &()).await.unwrap();
    metrics.record(&first);
    let second = client.complete(&first_turn("hi"), &()).await.unwrap();
    metrics.record(&second);

    let first_cost = (1000.0 * 2.0 + 200.0 * 10.0) / 1e6;
    let second_cost = (3000.0 * 2.0 + 100.0 * 10.0) / 1e6;
    assert!((first.cost.unwrap() - first_cost).abs() < 1e-12);
    assert!((second.cost.unwrap() - second_cost).abs() < 1e-12);
    assert!((metrics.accumulated_cost - (first_cost + second_cost)).abs() < 1e-12);

    let mut shown = metrics.to_json();
    shown["accumulated_cost"] = json!(0.011);
    assert_eq!(
        shown,
        json!({
            "accumulated_cost": 0.011,
            "max_budget_per_task": null,
            "accumulated_token_usage": {
                "model": "openai/local-coder",
                "prompt_tokens": 4000,
                "completion_tokens": 300,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "context_window": 0,
                "per_turn_token": 3100,
                "response_id": "",
            },
            "costs": [],
            "response_latencies": [],
            "token_usages": [],
        })
    );
    // The keys come in OpenHands' order when written out.
    let text = serde_json::to_string(&metrics).unwrap();
    let order = [
        "accumulated_cost",
        "max_budget_per_task",
        "accumulated_token_usage",
        "\"model\"",
        "prompt_tokens",
        "completion_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "context_window",
        "per_turn_token",
        "response_id",
        "costs",
        "response_latencies",
        "token_usages",
    ];
    let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[tokio::test]
async fn well_known_models_are_priced_from_the_table() {
    let (root, _server) = serve(vec![Turn::text("hi").with_usage(usage(1_000_000, 100_000))]).await;

    let answer = connect(&openai(&root, false))
        .unwrap()
        .complete(&first_turn("hi"), &())
        .await
        .unwrap();

    // gpt-4o: $2.50 in, $10 out per million.
    assert!(
        (answer.cost.unwrap() - 3.5).abs() < 1e-9,
        "{:?}",
        answer.cost
    );
}

#[tokio::test]
async fn unpriced_models_count_tokens_but_no_cost() {
    let (root, _server) = serve(vec![Turn::text("hi").with_usage(usage(10, 5))]).await;
    let settings = LlmSettings {
        model: "openai/llama3".into(),
        ..openai(&root, true)
    };
    let client = connect(&settings).unwrap();
    let mut metrics = Metrics::new(client.model()).with_max_budget(Some(1.0));

    let answer = client.complete(&first_turn("hi"), &()).await.unwrap();
    metrics.record(&answer);

    assert_eq!(answer.cost, None);
    assert_eq!(metrics.accumulated_cost, 0.0);
    assert_eq!(metrics.accumulated_token_usage.prompt_tokens, 10);
    assert_eq!(metrics.to_json()["max_budget_per_task"], 1.0);
    assert!(!metrics.over_budget());
}
