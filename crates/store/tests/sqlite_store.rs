#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The SQLite store on a real file: ids, ordering, paging and reopening. The bodies are shared
//! with the PostgreSQL store's tests (`common`).

#[macro_use]
mod common;

use async_trait::async_trait;
use common::Backend;
use ohd_store::Store;
use ohd_store::sqlite::{Durability, SqliteStore};
use std::sync::Arc;

/// A database file in a directory of its own; reopening opens the same file.
struct SqliteFile {
    dir: tempfile::TempDir,
}

#[async_trait(?Send)]
impl Backend for SqliteFile {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(
            SqliteStore::open(&self.dir.path().join("ohd.db"), Durability::Normal)
                .await
                .unwrap(),
        )
    }
}

async fn sqlite_file() -> Option<SqliteFile> {
    Some(SqliteFile {
        dir: tempfile::tempdir().unwrap(),
    })
}

store_tests!(sqlite_file();
    concurrent_appends_get_dense_unique_ids_that_survive_a_reopen,
    appending_to_an_unknown_conversation_is_refused,
    pages_walk_forward_and_backward_and_say_whether_there_is_more,
    conversations_list_newest_first_in_pages_and_delete_removes_events,
    a_follower_taking_items_with_and_without_waiting_sees_every_event_once_in_order,
    a_conversation_record_round_trips_and_cannot_be_created_twice,
    a_batch_shares_one_timestamp_which_becomes_the_last_update,
    a_conversation_deleted_and_created_again_starts_from_id_0,
);
