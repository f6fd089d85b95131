mod anthropic;
mod common;
mod metrics;
mod openai;
mod reasoning;
mod retries;
mod tool_calling;
