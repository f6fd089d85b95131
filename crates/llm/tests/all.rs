//! The model clients against a scripted model served over real HTTP by the test. One binary for
//! every suite (they share the helpers in `suite/common.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
