//! The shared store: one PostgreSQL database behind several ohd nodes.
//!
//! **Ids.** Each conversation's row keeps `next_event_id`. An append runs, in one transaction,
//! `UPDATE conversations SET next_event_id = next_event_id + n … RETURNING`, builds the events'
//! JSON with the ids (and the timestamp) that returned, inserts them, and commits. The UPDATE
//! locks the row until commit, so appends to one conversation are serialized by the database
//! whichever node they come from, ids stay dense from 0, and nothing in a node's memory needs
//! to agree with any other node. Appends to different conversations do not wait for each other.
//! Timestamps come from the database's clock (`clock_timestamp()`, read after the row lock is
//! held), so they grow with the ids even when nodes' clocks disagree; the JSON is made by the
//! same code as SQLite's.
//!
//! **Notify on commit.** The append's transaction also runs
//! `pg_notify('ohd_events', '<conversation> <last id>')`. PostgreSQL delivers a notification
//! only when its transaction commits, so no node hears of an event it cannot read yet.
//! [`PgNotifier`] listens on every node and, for conversations with subscribers there, reads
//! what is new after the last id it published there, once per node (not per subscriber), and
//! publishes it to that node's subscribers. A node's own appends are published at once, as with
//! [`LocalNotifier`]; only when events of other nodes precede one and are not published here
//! yet does it wait for them, to go out in order after the same single read. So each node's live
//! channel carries ids in increasing order, and followers rarely need to fill a gap themselves.
//! Notices (live-only status updates) travel on `ohd_notices`, tagged with the sending node so
//! it does not deliver them twice.
//!
//! **Catch-up safety net.** A notification is lost when the listening connection drops. So when
//! the listener reconnects, and on a periodic tick, the notifier compares each followed
//! conversation's last stored id with the last id it published and publishes the difference from
//! the store. The store stays the source of truth: a lost or late notification delays an event,
//! never loses, duplicates or reorders one.
//!
//! **Fencing.** A conversation's agent runs on the node holding its lease (table `leases`). A
//! grant carries a token greater than every earlier one; expiry is judged by the database's
//! clock. [`LeaseStore::append_fenced`] locks the lease row (`FOR SHARE`) in the append's own
//! transaction and writes only if the fence is still the current, unexpired grant. A takeover
//! must update that row, so it waits for a fenced append in flight, and once it has happened no
//! append with the old token can commit.

use crate::{
    ConversationList, ConversationRecord, ConversationStore, DocumentStore, EventPage, EventStore,
    Fence, LeaseHolder, LeaseStore, LocalNotifier, LogItem, Notifier, StoreError, StoredEvent,
    to_i64,
};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use ohd_protocol::{ConversationId, EventId, NewEvent, Timestamp};
use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Postgres, Row, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::AbortHandle;

/// How long a query waits for a connection of the pool before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an append keeps trying to start its transaction while the database cannot be
/// reached (a restart, a partition), before it fails.
const BEGIN_PATIENCE: Duration = Duration::from_secs(30);

/// Connections each node keeps to the database for the store.
const POOL_SIZE: u32 = 10;
/// Where committed appends are announced: `<conversation> <last new id>`.
const EVENTS_CHANNEL: &str = "ohd_events";
/// Where notices travel between nodes: `<node> <conversation> <notice JSON>`.
const NOTICES_CHANNEL: &str = "ohd_notices";
/// PostgreSQL refuses notification payloads from 8000 bytes; larger notices stay local.
const MAX_NOTICE_PAYLOAD: usize = 7000;
/// Events read from the store per query while catching up.
const PAGE: usize = 256;
/// Conversations asked about in one query of the periodic check.
const CHECK_CHUNK: usize = 1000;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// Whether an error says the database could not be reached (rather than refusing the request).
fn unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
    )
}

fn stored(row: &PgRow) -> Result<StoredEvent, StoreError> {
    let id: i64 = row.try_get(0)?;
    let json: String = row.try_get(1)?;
    Ok(StoredEvent::new(
        EventId(u64::try_from(id).unwrap_or_default()),
        json,
    ))
}

/// Microseconds since the epoch, as the queries below return times.
fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// How a time is bound: PostgreSQL keeps microseconds, so cut (not round) to them, as
/// [`Timestamp`] does.
fn time_param(at: DateTime<Utc>) -> String {
    at.trunc_subsecs(6).to_rfc3339()
}

fn fenced(conversation: &ConversationId, reason: impl Into<String>) -> StoreError {
    StoreError::Fenced {
        conversation: conversation.clone(),
        reason: reason.into(),
    }
}

/// The columns of a [`ConversationRecord`], times as microseconds since the epoch.
macro_rules! record_columns {
    () => {
        "seq, id, title, selected_repository, selected_branch, git_provider, trigger, \
         (extract(epoch FROM created_at) * 1000000)::bigint AS created_us, \
         (extract(epoch FROM last_updated_at) * 1000000)::bigint AS updated_us"
    };
}

fn record(row: &PgRow) -> Result<ConversationRecord, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(ConversationRecord {
        id: ConversationId::parse(&id).map_err(|e| StoreError::Setup(e.to_string()))?,
        title: row.try_get("title")?,
        created_at: from_micros(row.try_get("created_us")?),
        last_updated_at: from_micros(row.try_get("updated_us")?),
        selected_repository: row.try_get("selected_repository")?,
        selected_branch: row.try_get("selected_branch")?,
        git_provider: row.try_get("git_provider")?,
        trigger: row.try_get("trigger")?,
    })
}

impl PgStore {
    /// Starts a transaction, trying again while the database cannot be reached. Safe to retry:
    /// nothing is written before the transaction has begun. (An error later, at the commit,
    /// is not retried: the commit may have happened, and a retry could write events twice.)
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(50);
        loop {
            match self.pool.begin().await {
                Ok(tx) => return Ok(tx),
                Err(e) if started.elapsed() < BEGIN_PATIENCE && unreachable(&e) => {
                    tracing::debug!(error = %e, "the database cannot be reached; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Connects to the database at `url` (`postgres://user@host:port/db`) and brings its
    /// schema up to date. Nodes starting together are fine: migrations take a database lock.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        Self::connect_with(options).await
    }

    /// [`PgStore::connect`] with options built by the caller.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let options = options.log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations_postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Setup(e.to_string()))?;
        Ok(PgStore { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The last stored id of each of `conversations` that has events.
    async fn last_event_ids(
        &self,
        conversations: &[ConversationId],
    ) -> Result<HashMap<ConversationId, EventId>, StoreError> {
        let mut lasts = HashMap::new();
        for chunk in conversations.chunks(CHECK_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(ConversationId::as_str).collect();
            let rows = sqlx::query(
                "SELECT c.id, (SELECT MAX(e.id) FROM events e WHERE e.conversation_id = c.id) \
                 FROM UNNEST($1::text[]) AS c(id)",
            )
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let id: String = row.try_get(0)?;
                let max: Option<i64> = row.try_get(1)?;
                if let (Ok(id), Some(max)) = (ConversationId::parse(&id), max) {
                    lasts.insert(id, EventId(u64::try_from(max).unwrap_or_default()));
                }
            }
        }
        Ok(lasts)
    }

    /// Refuses (with [`StoreError::Fenced`]) unless `fence` is the current unexpired grant. The
    /// lease row stays share-locked until `tx` ends, so no takeover can commit in between.
    async fn check_fence(
        tx: &mut Transaction<'static, Postgres>,
        conversation: &ConversationId,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        if &fence.conversation != conversation {
            return Err(fenced(
                conversation,
                format!("the fence is for conversation {}", fence.conversation),
            ));
        }
        let row = sqlx::query(
            "SELECT node, token, expires_at > clock_timestamp() FROM leases \
             WHERE conversation_id = $1 FOR SHARE",
        )
        .bind(conversation.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else {
            return Err(fenced(conversation, "the conversation is not leased"));
        };
        let node: String = row.try_get(0)?;
        let token: i64 = row.try_get(1)?;
        let live: bool = row.try_get(2)?;
        if node != fence.node || token != fence.token {
            return Err(fenced(
                conversation,
                format!("node {node} holds it with token {token}"),
            ));
        }
        if !live {
            return Err(fenced(conversation, "the lease expired"));
        }
        Ok(())
    }

    /// Appends in one transaction, checking `fence` first if there is one.
    async fn write(
        &self,
        conversation: &ConversationId,
        events: Vec<NewEvent>,
        fence: Option<&Fence>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let started = Instant::now();
        let mut tx = self.begin().await?;
        if let Some(fence) = fence {
            Self::check_fence(&mut tx, conversation, fence).await?;
        }
        if events.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let count = to_i64(events.len() as u64);
        // The row lock taken here serializes appends to this conversation across all nodes
        // until commit; the clock is read after it is held, so timestamps follow ids.
        let row = sqlx::query(
            "UPDATE conversations \
             SET next_event_id = next_event_id + $2, last_updated_at = clock_timestamp() \
             WHERE id = $1 \
             RETURNING next_event_id, (extract(epoch FROM last_updated_at) * 1000000)::bigint",
        )
        .bind(conversation.as_str())
        .bind(count)
        .fetch_optional(&mut *tx)
        .await?;
        // Dropping `tx` rolls back; nothing was written.
        let Some(row) = row else {
            return Err(StoreError::ConversationNotFound(conversation.clone()));
        };
        let next: i64 = row.try_get(0)?;
        let micros: i64 = row.try_get(1)?;
        let first = u64::try_from(next - count).map_err(|_| StoreError::Corrupt {
            id: EventId(0),
            reason: format!("conversation {conversation} has next_event_id {next}"),
        })?;
        let at = DateTime::from_timestamp_micros(micros)
            .map_or_else(Timestamp::now, Timestamp::from_datetime);
        let stored = crate::stamp(events, first, at)?;
        let ids: Vec<i64> = stored.iter().map(|e| to_i64(e.id.0)).collect();
        let jsons: Vec<&str> = stored.iter().map(|e| &*e.json).collect();
        let last = stored.last().map_or(first, |e| e.id.0);
        // The notification goes out when (and only if) this transaction commits.
        sqlx::query(
            "WITH inserted AS ( \
                 INSERT INTO events (conversation_id, id, json) \
                 SELECT $1, t.id, t.json FROM UNNEST($2::bigint[], $3::text[]) AS t(id, json) \
             ) SELECT pg_notify($4, $5)",
        )
        .bind(conversation.as_str())
        .bind(ids)
        .bind(jsons)
        .bind(EVENTS_CHANNEL)
        .bind(format!("{conversation} {last}"))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let figures = ohd_metrics::metrics();
        figures
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        figures.events_appended.inc_by(stored.len() as u64);
        Ok(stored)
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn append(
        &self,
        conversation: &ConversationId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.write(conversation, events, None).await
    }

    async fn read_after(
        &self,
        conversation: &ConversationId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let after = after.map_or(-1, |id| to_i64(id.0));
        let rows = sqlx::query(
            "SELECT id, json FROM events WHERE conversation_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(conversation.as_str())
        .bind(after)
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored).collect()
    }

    async fn read_page(
        &self,
        conversation: &ConversationId,
        page: EventPage,
    ) -> Result<(Vec<StoredEvent>, bool), StoreError> {
        let end = page.end_id.map_or(i64::MAX, to_i64);
        let query = if page.reverse {
            "SELECT id, json FROM events WHERE conversation_id = $1 AND id >= $2 AND id <= $3 ORDER BY id DESC LIMIT $4"
        } else {
            "SELECT id, json FROM events WHERE conversation_id = $1 AND id >= $2 AND id <= $3 ORDER BY id LIMIT $4"
        };
        // One extra row tells whether there is more.
        let rows = sqlx::query(query)
            .bind(conversation.as_str())
            .bind(to_i64(page.start_id))
            .bind(end)
            .bind(to_i64(page.limit as u64).saturating_add(1))
            .fetch_all(&self.pool)
            .await?;
        let mut events = rows.iter().map(stored).collect::<Result<Vec<_>, _>>()?;
        let has_more = events.len() > page.limit;
        events.truncate(page.limit);
        Ok((events, has_more))
    }

    async fn last_event_id(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<EventId>, StoreError> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(id) FROM events WHERE conversation_id = $1")
                .bind(conversation.as_str())
                .fetch_one(&self.pool)
                .await?;
        Ok(max.and_then(|m| u64::try_from(m).ok()).map(EventId))
    }
}

#[async_trait]
impl ConversationStore for PgStore {
    async fn create_conversation(&self, r: ConversationRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO conversations (id, title, created_at, last_updated_at, selected_repository, selected_branch, git_provider, trigger) \
             VALUES ($1, $2, $3::timestamptz, $4::timestamptz, $5, $6, $7, $8)",
        )
        .bind(r.id.as_str())
        .bind(&r.title)
        .bind(time_param(r.created_at))
        .bind(time_param(r.last_updated_at))
        .bind(&r.selected_repository)
        .bind(&r.selected_branch)
        .bind(&r.git_provider)
        .bind(&r.trigger)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::ConversationExists(r.id))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM conversations WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    async fn list_conversations(
        &self,
        limit: usize,
        page: Option<&str>,
    ) -> Result<ConversationList, StoreError> {
        // The cursor is the `seq` of the last conversation of the previous page; anything that
        // does not parse starts from the top, as with SQLite.
        let before = page.and_then(|p| p.parse::<i64>().ok()).unwrap_or(i64::MAX);
        let rows = sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM conversations WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(before)
        .bind(to_i64(limit as u64).saturating_add(1))
        .fetch_all(&self.pool)
        .await?;
        let has_more = rows.len() > limit;
        let rows = &rows[..rows.len().min(limit)];
        let next_page = match (has_more, rows.last()) {
            (true, Some(last)) => Some(last.try_get::<i64, _>("seq")?.to_string()),
            _ => None,
        };
        Ok(ConversationList {
            conversations: rows.iter().map(record).collect::<Result<_, _>>()?,
            next_page,
        })
    }

    async fn rename_conversation(
        &self,
        id: &ConversationId,
        title: &str,
    ) -> Result<bool, StoreError> {
        let renamed = sqlx::query(
            "UPDATE conversations SET title = $1, last_updated_at = clock_timestamp() WHERE id = $2",
        )
        .bind(title)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renamed > 0)
    }

    async fn delete_conversation(&self, id: &ConversationId) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A deleted conversation has no owner: expire its lease (the row stays, so tokens keep
        // growing if the id is used again). Lease first, then the conversation row, in the
        // order fenced appends lock them, so the two cannot deadlock.
        sqlx::query("UPDATE leases SET expires_at = '-infinity' WHERE conversation_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        // Its events go with it (ON DELETE CASCADE). The row lock waits for an append in
        // flight, whose events are then deleted too; a later append finds no row.
        let gone = sqlx::query("DELETE FROM conversations WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone > 0)
    }
}

#[async_trait]
impl LeaseStore for PgStore {
    async fn try_acquire_lease(
        &self,
        conversation: &ConversationId,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>, StoreError> {
        // A live lease of another node is answered by a plain read: asking must not lock the
        // row, or every join and message on other nodes would queue the owner's appends.
        let current: Option<(String, bool)> = sqlx::query_as(
            "SELECT node, expires_at > clock_timestamp() FROM leases WHERE conversation_id = $1",
        )
        .bind(conversation.as_str())
        .fetch_optional(&self.pool)
        .await?;
        if let Some((holder, true)) = &current
            && holder != node
        {
            return Ok(None);
        }
        // Then one statement, atomic by the row lock ON CONFLICT takes, and only for a
        // conversation that exists (a deleted one is never taken up again). Every grant gets a new
        // token, the holder's too: an older task of the same node that has not ended yet is
        // fenced out by it, and its release no longer matches.
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases AS l (conversation_id, node, token, expires_at) \
             SELECT $1, $2, 1, clock_timestamp() + make_interval(secs => $3) \
             WHERE EXISTS (SELECT 1 FROM conversations WHERE id = $1) \
             ON CONFLICT (conversation_id) DO UPDATE SET \
                 token = l.token + 1, \
                 node = EXCLUDED.node, \
                 expires_at = clock_timestamp() + make_interval(secs => $3) \
             WHERE l.node = EXCLUDED.node OR l.expires_at <= clock_timestamp() \
             RETURNING token",
        )
        .bind(conversation.as_str())
        .bind(node)
        .bind(ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(token.map(|token| Fence {
            conversation: conversation.clone(),
            node: node.to_owned(),
            token,
        }))
    }

    async fn renew_lease(&self, fence: &Fence, ttl: Duration) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => $4) \
             WHERE conversation_id = $1 AND node = $2 AND token = $3 \
               AND expires_at > clock_timestamp()",
        )
        .bind(fence.conversation.as_str())
        .bind(&fence.node)
        .bind(fence.token)
        .bind(ttl.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed > 0)
    }

    async fn release_lease(&self, fence: &Fence) -> Result<bool, StoreError> {
        let released = sqlx::query(
            "UPDATE leases SET expires_at = '-infinity' \
             WHERE conversation_id = $1 AND node = $2 AND token = $3 \
               AND expires_at > clock_timestamp()",
        )
        .bind(fence.conversation.as_str())
        .bind(&fence.node)
        .bind(fence.token)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(released > 0)
    }

    async fn rename_fenced(
        &self,
        conversation: &ConversationId,
        title: &str,
        fence: &Fence,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        Self::check_fence(&mut tx, conversation, fence).await?;
        let renamed = sqlx::query(
            "UPDATE conversations SET title = $1, last_updated_at = clock_timestamp() WHERE id = $2",
        )
        .bind(title)
        .bind(conversation.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(renamed > 0)
    }

    async fn revoke_lease(&self, conversation: &ConversationId) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE leases SET token = token + 1, expires_at = '-infinity' \
             WHERE conversation_id = $1",
        )
        .bind(conversation.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_watched(
        &self,
        node: &str,
        conversations: &[ConversationId],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = conversations.iter().map(ConversationId::as_str).collect();
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO watchers (conversation_id, node, until) \
                 SELECT id, $2, clock_timestamp() + make_interval(secs => $3) FROM unnest($1::text[]) AS id \
                 ON CONFLICT (conversation_id, node) DO UPDATE SET until = EXCLUDED.until",
            )
            .bind(&ids)
            .bind(node)
            .bind(ttl.as_secs_f64())
            .execute(&self.pool)
            .await?;
        }
        // Rows of nodes long gone, and of conversations no longer looked at.
        sqlx::query("DELETE FROM watchers WHERE until < clock_timestamp() - interval '1 minute'")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn watched_elsewhere(
        &self,
        node: &str,
        conversations: &[ConversationId],
    ) -> Result<Vec<ConversationId>, StoreError> {
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = conversations.iter().map(ConversationId::as_str).collect();
        let watched: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT conversation_id FROM watchers \
             WHERE conversation_id = ANY($1::text[]) AND node <> $2 AND until > clock_timestamp()",
        )
        .bind(&ids)
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        Ok(watched
            .iter()
            .filter_map(|id| ConversationId::parse(id).ok())
            .collect())
    }

    async fn lapsed_leases(&self, limit: usize) -> Result<Vec<ConversationId>, StoreError> {
        // A released lease (or a deleted conversation's) is set to '-infinity': not lapsed.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT conversation_id FROM leases \
             WHERE expires_at <= clock_timestamp() AND expires_at <> '-infinity' \
             ORDER BY expires_at LIMIT $1",
        )
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids
            .iter()
            .filter_map(|id| ConversationId::parse(id).ok())
            .collect())
    }

    async fn lease_holder(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<LeaseHolder>, StoreError> {
        let row = sqlx::query(
            "SELECT node, token, expires_at <= clock_timestamp() FROM leases WHERE conversation_id = $1",
        )
        .bind(conversation.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(LeaseHolder {
                node: row.try_get(0)?,
                token: row.try_get(1)?,
                expired: row.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn append_fenced(
        &self,
        conversation: &ConversationId,
        events: Vec<NewEvent>,
        fence: &Fence,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // Even with nothing to write the fence is checked, so `Ok` always means "still yours".
        self.write(conversation, events, Some(fence)).await
    }
}

#[async_trait]
impl DocumentStore for PgStore {
    async fn get_document(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT json FROM documents WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_document(&self, name: &str, json: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO documents (name, json, updated_at) VALUES ($1, $2, clock_timestamp()) \
             ON CONFLICT (name) DO UPDATE SET json = EXCLUDED.json, updated_at = EXCLUDED.updated_at",
        )
        .bind(name)
        .bind(json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn replace_document(
        &self,
        name: &str,
        expected: Option<&str>,
        json: &str,
    ) -> Result<bool, StoreError> {
        let query = match expected {
            None => sqlx::query(
                "INSERT INTO documents (name, json, updated_at) VALUES ($1, $2, clock_timestamp()) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(json),
            Some(expected) => sqlx::query(
                "UPDATE documents SET json = $2, updated_at = clock_timestamp() \
                 WHERE name = $1 AND json = $3",
            )
            .bind(name)
            .bind(json)
            .bind(expected),
        };
        Ok(query.execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn delete_document(&self, name: &str) -> Result<bool, StoreError> {
        let gone = sqlx::query("DELETE FROM documents WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(gone > 0)
    }
}

/// How a [`PgNotifier`] runs.
#[derive(Debug, Clone)]
pub struct PgNotifierConfig {
    /// This node's name among the nodes sharing the database; it must differ from theirs, and
    /// have no whitespace.
    pub node: String,
    /// Capacity of each conversation's local live channel (as [`LocalNotifier::new`]).
    pub capacity: usize,
    /// How often the safety net compares what is stored with what was published.
    pub check_every: Duration,
}

impl PgNotifierConfig {
    pub fn new(node: impl Into<String>, capacity: usize) -> Self {
        PgNotifierConfig {
            node: node.into(),
            capacity,
            check_every: Duration::from_secs(1),
        }
    }

    /// A random node name, for nodes nobody needs to tell apart by name.
    pub fn random_node() -> String {
        // A generated conversation id is 32 random hex digits; 16 are plenty here.
        ConversationId::generate()
            .as_str()
            .chars()
            .take(16)
            .collect()
    }
}

/// A [`Notifier`] for nodes sharing a [`PgStore`]: local subscribers hear of events committed
/// on any node, and of notices published on any node. See the module documentation.
///
/// Its background tasks end when it is dropped.
pub struct PgNotifier {
    shared: Arc<Shared>,
    outbox: mpsc::Sender<(ConversationId, Arc<str>)>,
    tasks: Vec<AbortHandle>,
}

/// What the listening task passes to the working one.
enum Heard {
    /// Another (or this) node committed events up to `last`.
    Events {
        conversation: ConversationId,
        last: EventId,
    },
    /// The listening connection was lost and is back: notifications may have been missed.
    Reconnected,
}

struct Shared {
    local: LocalNotifier,
    store: PgStore,
    node: String,
    /// The highest event id published here, per conversation with local subscribers. Local
    /// subscribers have been sent every event up to it that this node saw committed.
    marks: Mutex<HashMap<ConversationId, EventId>>,
    /// Conversations where a local append got ahead of the mark (events of other nodes came
    /// between), with the newest id seen; the worker publishes them in order from the store.
    wanted: Mutex<HashMap<ConversationId, EventId>>,
    wake: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// An event committed on this node, as its [`crate::EventLog`] publishes it.
    fn publish_committed(&self, conversation: &ConversationId, event: StoredEvent) {
        let mut marks = lock(&self.marks);
        if self.local.subscribers(conversation) == 0 {
            marks.remove(conversation);
            // Lets the local notifier drop the idle channel.
            self.local.publish(conversation, LogItem::Event(event));
            return;
        }
        match marks.get(conversation).copied() {
            // Already published, read from the store on another node's notification.
            Some(mark) if event.id <= mark => {}
            // Events of other nodes come first and are not published here yet: publish them
            // all in order from one store read, not this one past a gap that every follower
            // would fill with a store read of its own.
            Some(mark) if event.id.0 > mark.0 + 1 => {
                drop(marks);
                self.want(conversation, event.id);
            }
            _ => {
                marks.insert(conversation.clone(), event.id);
                self.local.publish(conversation, LogItem::Event(event));
            }
        }
    }

    /// Events read from the store (dense, ascending) that this node has not published yet.
    /// False when nobody here follows the conversation any more.
    fn publish_read(&self, conversation: &ConversationId, events: Vec<StoredEvent>) -> bool {
        let mut marks = lock(&self.marks);
        if self.local.subscribers(conversation) == 0 {
            marks.remove(conversation);
            return false;
        }
        for event in events {
            if marks
                .get(conversation)
                .is_some_and(|mark| event.id <= *mark)
            {
                continue;
            }
            marks.insert(conversation.clone(), event.id);
            self.local.publish(conversation, LogItem::Event(event));
        }
        true
    }

    fn want(&self, conversation: &ConversationId, newest: EventId) {
        let mut wanted = lock(&self.wanted);
        let entry = wanted.entry(conversation.clone()).or_insert(newest);
        *entry = (*entry).max(newest);
        drop(wanted);
        self.wake.notify_one();
    }

    /// Publishes what the store holds after this node's mark, up to at least `newest`.
    async fn catch_up(
        &self,
        conversation: &ConversationId,
        newest: EventId,
    ) -> Result<(), StoreError> {
        loop {
            let after = match lock(&self.marks).get(conversation).copied() {
                Some(mark) if mark >= newest => return Ok(()),
                Some(mark) => Some(mark),
                // Nothing published here yet, so what local subscribers have read is unknown:
                // start at `newest`. A follower missing earlier events sees the gap and reads
                // them from the store itself.
                None => newest.0.checked_sub(1).map(EventId),
            };
            let page = self.store.read_after(conversation, after, PAGE).await?;
            let full = page.len() == PAGE;
            if !self.publish_read(conversation, page) || !full {
                return Ok(());
            }
        }
    }

    async fn catch_up_logged(&self, conversation: &ConversationId, newest: EventId) {
        if let Err(e) = self.catch_up(conversation, newest).await {
            // The periodic check tries again.
            tracing::warn!(%conversation, error = %e, "cannot read events published on another node");
        }
    }

    async fn handle(&self, batch: Vec<Heard>) {
        // A burst of notifications costs one store read per conversation.
        let mut newest: HashMap<ConversationId, EventId> = HashMap::new();
        let mut reconnected = false;
        for heard in batch {
            match heard {
                Heard::Events { conversation, last } => {
                    let entry = newest.entry(conversation).or_insert(last);
                    *entry = (*entry).max(last);
                }
                Heard::Reconnected => reconnected = true,
            }
        }
        for (conversation, last) in newest {
            if self.local.subscribers(&conversation) == 0 {
                lock(&self.marks).remove(&conversation);
                continue;
            }
            self.catch_up_logged(&conversation, last).await;
        }
        if reconnected {
            self.check_all().await;
        }
    }

    /// The safety net: for every conversation followed here, publishes whatever is stored
    /// beyond what was published, whether or not a notification said so.
    async fn check_all(&self) {
        let subscribed = self.local.subscribed();
        // Taken before the store is asked: a mark then at most equals the stored last id,
        // unless the conversation was deleted (and maybe created again) meanwhile.
        let marks: HashMap<ConversationId, EventId> = {
            let followed: HashSet<&ConversationId> = subscribed.iter().collect();
            let mut marks = lock(&self.marks);
            // Forget conversations nobody here follows any more.
            marks.retain(|conversation, _| followed.contains(conversation));
            marks.clone()
        };
        if subscribed.is_empty() {
            return;
        }
        let lasts = match self.store.last_event_ids(&subscribed).await {
            Ok(lasts) => lasts,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check for events missed by notifications");
                return;
            }
        };
        for conversation in subscribed {
            let mark = marks.get(&conversation).copied();
            let last = lasts.get(&conversation).copied();
            if let Some(mark) = mark
                && last.is_none_or(|last| last < mark)
            {
                // The log went backwards: deleted, perhaps created again. Start afresh.
                let mut current = lock(&self.marks);
                if current.get(&conversation) == Some(&mark) {
                    current.remove(&conversation);
                }
            }
            if let Some(last) = last {
                self.catch_up_logged(&conversation, last).await;
            }
        }
    }
}

/// A listening connection of its own (named, so operators can tell it apart), on both channels.
async fn listen_on(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    listener
        .listen_all([EVENTS_CHANNEL, NOTICES_CHANNEL])
        .await?;
    Ok(listener)
}

/// Listens until the worker is gone, reconnecting for as long as it takes.
async fn listen(
    shared: Arc<Shared>,
    options: PgConnectOptions,
    mut listener: PgListener,
    heard: mpsc::Sender<Heard>,
) {
    loop {
        let next = match listener.try_recv().await {
            Ok(Some(notification)) => shared.hear(&notification),
            Ok(None) => {
                // sqlx would listen again only at the next notification; reconnecting here
                // makes the catch-up come after listening is back, not before.
                tracing::warn!("lost the PostgreSQL LISTEN connection; reconnecting");
                drop(listener);
                listener = reconnect(&options).await;
                tracing::info!("PostgreSQL LISTEN connection is back; catching up");
                Some(Heard::Reconnected)
            }
            Err(e) => {
                tracing::warn!(error = %e, "lost the PostgreSQL LISTEN connection; reconnecting");
                drop(listener);
                listener = reconnect(&options).await;
                tracing::info!("PostgreSQL LISTEN connection is back; catching up");
                Some(Heard::Reconnected)
            }
        };
        if let Some(next) = next
            && heard.send(next).await.is_err()
        {
            return;
        }
    }
}

async fn reconnect(options: &PgConnectOptions) -> PgListener {
    let mut delay = Duration::from_millis(100);
    loop {
        match listen_on(options).await {
            Ok(listener) => return listener,
            Err(e) => {
                tracing::debug!(error = %e, "cannot LISTEN yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

impl Shared {
    /// What a notification means. Notices are delivered here at once; events go to the worker,
    /// which reads them from the store.
    fn hear(&self, notification: &PgNotification) -> Option<Heard> {
        let payload = notification.payload();
        match notification.channel() {
            EVENTS_CHANNEL => {
                let parsed = payload.split_once(' ').and_then(|(conversation, last)| {
                    Some(Heard::Events {
                        conversation: ConversationId::parse(conversation).ok()?,
                        last: EventId(last.parse().ok()?),
                    })
                });
                if parsed.is_none() {
                    tracing::debug!(payload, "unreadable event notification");
                }
                parsed
            }
            NOTICES_CHANNEL => {
                let mut parts = payload.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(node), Some(conversation), Some(json)) => {
                        // This node delivered its own notice when it was published.
                        if node != self.node
                            && let Ok(conversation) = ConversationId::parse(conversation)
                        {
                            self.local
                                .publish(&conversation, LogItem::Notice(Arc::from(json)));
                        }
                    }
                    _ => tracing::debug!(payload, "unreadable notice notification"),
                }
                None
            }
            _ => None,
        }
    }
}

async fn work(shared: Arc<Shared>, mut heard: mpsc::Receiver<Heard>, check_every: Duration) {
    let mut tick = tokio::time::interval(check_every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            received = heard.recv_many(&mut batch, 1024) => {
                if received == 0 {
                    return;
                }
                shared.handle(std::mem::take(&mut batch)).await;
            }
            () = shared.wake.notified() => {
                let wanted = std::mem::take(&mut *lock(&shared.wanted));
                for (conversation, newest) in wanted {
                    shared.catch_up_logged(&conversation, newest).await;
                }
            }
            _ = tick.tick() => shared.check_all().await,
        }
    }
}

/// Sends notices to the other nodes, one statement (one transaction) each: PostgreSQL folds
/// equal notifications of one transaction into one.
async fn send_notices(
    pool: PgPool,
    node: String,
    mut outbox: mpsc::Receiver<(ConversationId, Arc<str>)>,
) {
    while let Some((conversation, json)) = outbox.recv().await {
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTICES_CHANNEL)
            .bind(format!("{node} {conversation} {json}"))
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!(%conversation, error = %e, "notice not sent to other nodes");
        }
    }
}

impl PgNotifier {
    /// Starts listening (on a connection of its own, to the database `store` uses) and returns
    /// once it listens, so nothing committed afterwards can be missed.
    pub async fn start(store: PgStore, config: PgNotifierConfig) -> Result<Self, StoreError> {
        let PgNotifierConfig {
            node,
            capacity,
            check_every,
        } = config;
        if node.is_empty() || node.contains(char::is_whitespace) {
            return Err(StoreError::Setup(format!(
                "node name {node:?} must be non-empty and have no whitespace"
            )));
        }
        let options = (*store.pool.connect_options())
            .clone()
            .application_name(&format!("ohd-listen:{node}"));
        let listener = listen_on(&options).await?;
        let pool = store.pool.clone();
        let shared = Arc::new(Shared {
            local: LocalNotifier::new(capacity),
            store,
            node: node.clone(),
            marks: Mutex::new(HashMap::new()),
            wanted: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        let (heard_tx, heard_rx) = mpsc::channel(4096);
        let (outbox_tx, outbox_rx) = mpsc::channel(1024);
        let tasks = vec![
            tokio::spawn(listen(shared.clone(), options, listener, heard_tx)).abort_handle(),
            tokio::spawn(work(shared.clone(), heard_rx, check_every)).abort_handle(),
            tokio::spawn(send_notices(pool, node, outbox_rx)).abort_handle(),
        ];
        Ok(PgNotifier {
            shared,
            outbox: outbox_tx,
            tasks,
        })
    }

    pub fn node(&self) -> &str {
        &self.shared.node
    }
}

impl Drop for PgNotifier {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Notifier for PgNotifier {
    fn publish(&self, conversation: &ConversationId, item: LogItem) {
        match item {
            LogItem::Event(event) => self.shared.publish_committed(conversation, event),
            LogItem::Notice(json) => {
                self.shared
                    .local
                    .publish(conversation, LogItem::Notice(json.clone()));
                let size = self.shared.node.len() + conversation.as_str().len() + json.len() + 2;
                if size > MAX_NOTICE_PAYLOAD {
                    tracing::debug!(%conversation, size, "notice too large for other nodes; delivered here only");
                    return;
                }
                if self.outbox.try_send((conversation.clone(), json)).is_err() {
                    tracing::warn!(%conversation, "notice outbox full; delivered here only");
                }
            }
        }
    }

    fn subscribe(&self, conversation: &ConversationId) -> broadcast::Receiver<LogItem> {
        self.shared.local.subscribe(conversation)
    }
}
