//! For tests and benchmarks only (feature `testing`): a PostgreSQL database of their own.
//!
//! The server is `OHD_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Without a server the caller is told to skip, unless `CI` is set: then it fails, since these
//! tests must run there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::postgres::PgStore;
use ohd_protocol::ConversationId;
use sqlx::{Connection, Executor, PgConnection};
use std::sync::Mutex;
use std::time::Duration;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database made for one test, dropped (with whatever is still connected, and the roles
/// made for it) when it is.
pub struct TestDatabase {
    pub server_url: String,
    pub name: String,
    pub url: String,
    roles: Mutex<Vec<String>>,
}

/// `url` with its database replaced by `name` (its query kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

impl TestDatabase {
    /// `None` (after saying so) when there is no server to test against, outside CI.
    pub async fn create() -> Option<TestDatabase> {
        let server_url =
            std::env::var("OHD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let connected =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&server_url)).await;
        let mut admin = match connected {
            Ok(Ok(admin)) => admin,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "no PostgreSQL at {server_url} ({why}), and CI is set: these tests must run"
                );
                eprintln!("skipped: no PostgreSQL at {server_url} ({why})");
                return None;
            }
        };
        let name = format!("ohd_t_{}", ConversationId::generate());
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap();
        let url = with_database(&server_url, &name);
        Some(TestDatabase {
            server_url,
            name,
            url,
            roles: Mutex::new(Vec::new()),
        })
    }

    /// A connection to the server's own database, for statements about this one.
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.server_url).await.unwrap()
    }

    pub async fn store(&self) -> PgStore {
        PgStore::connect(&self.url).await.unwrap()
    }

    /// Drops `role` with the database.
    pub fn drop_role_afterwards(&self, role: String) {
        self.roles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(role);
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort, and on a thread of its own: drop cannot wait on the test's runtime.
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        let roles = std::mem::take(&mut *self.roles.lock().unwrap_or_else(|p| p.into_inner()));
        let dropped = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&server_url).await {
                    let _ = admin
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .await;
                    for role in roles {
                        let _ = admin
                            .execute(sqlx::AssertSqlSafe(format!(
                                "DROP ROLE IF EXISTS \"{role}\""
                            )))
                            .await;
                    }
                }
            });
        });
        let _ = dropped.join();
    }
}
