mod anthropic;
mod common;
mod metrics;
mod openai;
mod retries;
