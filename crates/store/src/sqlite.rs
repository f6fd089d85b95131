//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one writer task that owns the only writing connection. It is the one
//! place event ids are assigned (it keeps each conversation's next id), and it commits whatever
//! appends are waiting as one transaction (group commit), so many producers cost one sync.
//! Reads use a pool of other connections, which WAL lets run beside the writer.

use crate::{
    ConversationList, ConversationRecord, ConversationStore, EventPage, EventStore, StoreError,
    StoredEvent, to_i64,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ohd_protocol::{ConversationId, EventId, NewEvent, Timestamp};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How hard SQLite works to keep a commit. `Normal` survives any crash of ohd itself (`kill -9`);
/// `Full` also survives a power cut, at the cost of a sync per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Normal,
    Full,
}

/// Most appends one transaction takes; bounds the latency a burst adds to the first in line.
const MAX_BATCH: usize = 512;

pub struct SqliteStore {
    reader: SqlitePool,
    writer: mpsc::Sender<Command>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Append {
        conversation: ConversationId,
        events: Vec<NewEvent>,
        reply: Reply<Vec<StoredEvent>>,
    },
    Create {
        record: ConversationRecord,
        reply: Reply<()>,
    },
    Rename {
        id: ConversationId,
        title: String,
        reply: Reply<bool>,
    },
    Delete {
        id: ConversationId,
        reply: Reply<bool>,
    },
}

impl SqliteStore {
    /// Opens (creating if need be) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(Duration::from_secs(10))
            .log_statements(tracing::log::LevelFilter::Trace);
        let mut writer = options.connect().await?;
        sqlx::migrate!("./migrations")
            .run(&mut writer)
            .await
            .map_err(|e| StoreError::Setup(e.to_string()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options.read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(Writer::new(writer).run(rx));
        Ok(SqliteStore { reader, writer: tx })
    }

    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

fn stored(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let id: i64 = row.try_get(0)?;
    let json: String = row.try_get(1)?;
    Ok(StoredEvent::new(
        EventId(u64::try_from(id).unwrap_or_default()),
        json,
    ))
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        conversation: &ConversationId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.send(|reply| Command::Append {
            conversation: conversation.clone(),
            events,
            reply,
        })
        .await
    }

    async fn read_after(
        &self,
        conversation: &ConversationId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let after = after.map_or(-1, |id| to_i64(id.0));
        let rows = sqlx::query(
            "SELECT id, json FROM events WHERE conversation_id = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(conversation.as_str())
        .bind(after)
        .bind(to_i64(limit as u64))
        .fetch_all(&self.reader)
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
            "SELECT id, json FROM events WHERE conversation_id = ? AND id >= ? AND id <= ? ORDER BY id DESC LIMIT ?"
        } else {
            "SELECT id, json FROM events WHERE conversation_id = ? AND id >= ? AND id <= ? ORDER BY id LIMIT ?"
        };
        // One extra row tells whether there is more.
        let rows = sqlx::query(query)
            .bind(conversation.as_str())
            .bind(to_i64(page.start_id))
            .bind(end)
            .bind(to_i64(page.limit as u64 + 1))
            .fetch_all(&self.reader)
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
            sqlx::query_scalar("SELECT MAX(id) FROM events WHERE conversation_id = ?")
                .bind(conversation.as_str())
                .fetch_one(&self.reader)
                .await?;
        Ok(max.and_then(|m| u64::try_from(m).ok()).map(EventId))
    }
}

fn parse_time(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn record(row: &SqliteRow) -> Result<ConversationRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let created: String = row.try_get("created_at")?;
    let updated: String = row.try_get("last_updated_at")?;
    Ok(ConversationRecord {
        id: ConversationId::parse(&id).map_err(|e| StoreError::Setup(e.to_string()))?,
        title: row.try_get("title")?,
        created_at: parse_time(&created),
        last_updated_at: parse_time(&updated),
        selected_repository: row.try_get("selected_repository")?,
        selected_branch: row.try_get("selected_branch")?,
        git_provider: row.try_get("git_provider")?,
        trigger: row.try_get("trigger")?,
    })
}

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn create_conversation(&self, record: ConversationRecord) -> Result<(), StoreError> {
        self.send(|reply| Command::Create { record, reply }).await
    }

    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM conversations WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(record).transpose()
    }

    async fn list_conversations(
        &self,
        limit: usize,
        page: Option<&str>,
    ) -> Result<ConversationList, StoreError> {
        // The cursor is the `seq` of the last conversation of the previous page; anything that
        // does not parse starts from the top, as an unknown page id would in the original.
        let before = page.and_then(|p| p.parse::<i64>().ok()).unwrap_or(i64::MAX);
        let rows =
            sqlx::query("SELECT * FROM conversations WHERE seq < ? ORDER BY seq DESC LIMIT ?")
                .bind(before)
                .bind(to_i64(limit as u64 + 1))
                .fetch_all(&self.reader)
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
        let title = title.to_owned();
        self.send(|reply| Command::Rename {
            id: id.clone(),
            title,
            reply,
        })
        .await
    }

    async fn delete_conversation(&self, id: &ConversationId) -> Result<bool, StoreError> {
        self.send(|reply| Command::Delete {
            id: id.clone(),
            reply,
        })
        .await
    }
}

/// The single writer. `next_ids` caches each known conversation's next event id; it is only
/// trusted while the transactions that built it committed, and is dropped when one fails.
struct Writer {
    conn: SqliteConnection,
    next_ids: HashMap<ConversationId, u64>,
}

struct PendingAppend {
    conversation: ConversationId,
    events: Vec<NewEvent>,
    reply: Reply<Vec<StoredEvent>>,
}

impl Writer {
    fn new(conn: SqliteConnection) -> Self {
        Writer {
            conn,
            next_ids: HashMap::new(),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while commands.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let mut appends = Vec::new();
            for command in batch.drain(..) {
                match command {
                    Command::Append {
                        conversation,
                        events,
                        reply,
                    } => appends.push(PendingAppend {
                        conversation,
                        events,
                        reply,
                    }),
                    other => {
                        // Keep the callers' order: appends queued before this command commit first.
                        self.commit_appends(std::mem::take(&mut appends)).await;
                        self.apply(other).await;
                    }
                }
            }
            self.commit_appends(appends).await;
        }
        tracing::debug!("store writer stopped");
    }

    async fn apply(&mut self, command: Command) {
        match command {
            Command::Append { .. } => {}
            Command::Create { record, reply } => {
                let result = self.create(record).await;
                let _ = reply.send(result);
            }
            Command::Rename { id, title, reply } => {
                let result = sqlx::query(
                    "UPDATE conversations SET title = ?, last_updated_at = ? WHERE id = ?",
                )
                .bind(title)
                .bind(Utc::now().to_rfc3339())
                .bind(id.as_str())
                .execute(&mut self.conn)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(StoreError::from);
                let _ = reply.send(result);
            }
            Command::Delete { id, reply } => {
                let result = self.delete(&id).await;
                self.next_ids.remove(&id);
                let _ = reply.send(result);
            }
        }
    }

    async fn create(&mut self, r: ConversationRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO conversations (id, title, created_at, last_updated_at, selected_repository, selected_branch, git_provider, trigger) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.id.as_str())
        .bind(&r.title)
        .bind(r.created_at.to_rfc3339())
        .bind(r.last_updated_at.to_rfc3339())
        .bind(&r.selected_repository)
        .bind(&r.selected_branch)
        .bind(&r.git_provider)
        .bind(&r.trigger)
        .execute(&mut self.conn)
        .await;
        match result {
            Ok(_) => {
                self.next_ids.insert(r.id, 0);
                Ok(())
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::ConversationExists(r.id))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&mut self, id: &ConversationId) -> Result<bool, StoreError> {
        let mut tx = self.conn.begin().await?;
        sqlx::query("DELETE FROM events WHERE conversation_id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM conversations WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone > 0)
    }

    /// The next id of a conversation, or `None` if it does not exist.
    async fn next_id(&mut self, conversation: &ConversationId) -> Result<Option<u64>, StoreError> {
        if let Some(next) = self.next_ids.get(conversation) {
            return Ok(Some(*next));
        }
        let row = sqlx::query(
            "SELECT EXISTS(SELECT 1 FROM conversations WHERE id = ?1), (SELECT MAX(id) FROM events WHERE conversation_id = ?1)",
        )
        .bind(conversation.as_str())
        .fetch_one(&mut self.conn)
        .await?;
        let exists: bool = row.try_get(0)?;
        let max: Option<i64> = row.try_get(1)?;
        if !exists {
            return Ok(None);
        }
        let next = max.map_or(0, |m| u64::try_from(m).unwrap_or(0) + 1);
        self.next_ids.insert(conversation.clone(), next);
        Ok(Some(next))
    }

    async fn commit_appends(&mut self, appends: Vec<PendingAppend>) {
        if appends.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        match self.write_appends(&appends).await {
            Ok(results) => {
                let figures = ohd_metrics::metrics();
                figures
                    .store_commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                let stored: usize = results
                    .iter()
                    .filter_map(|r| r.as_ref().ok())
                    .map(Vec::len)
                    .sum();
                figures.events_appended.inc_by(stored as u64);
                for (append, result) in appends.into_iter().zip(results) {
                    let _ = append.reply.send(result);
                }
            }
            Err(e) => {
                // Nothing of this batch is committed; ids handed out in memory are void.
                tracing::error!(error = %e, "event append failed");
                self.next_ids.clear();
                let message = e.to_string();
                for append in appends {
                    let _ = append.reply.send(Err(StoreError::Setup(format!(
                        "events not stored: {message}"
                    ))));
                }
            }
        }
    }

    /// Writes every append in one transaction. Per-append refusals (unknown conversation) are
    /// answered individually; a database failure fails the whole batch.
    async fn write_appends(
        &mut self,
        appends: &[PendingAppend],
    ) -> Result<Vec<Result<Vec<StoredEvent>, StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(appends.len());
        let mut touched: HashMap<&ConversationId, Timestamp> = HashMap::new();
        let mut planned: Vec<(&ConversationId, u64)> = Vec::new();
        // Assign ids first (reads may need the connection), then write.
        let mut staged = Vec::with_capacity(appends.len());
        for append in appends {
            match self.next_id(&append.conversation).await? {
                None => {
                    staged.push(None);
                }
                Some(first) => {
                    let now = Timestamp::now();
                    let out = crate::stamp(append.events.iter().cloned(), first, now)?;
                    let next = first + append.events.len() as u64;
                    self.next_ids.insert(append.conversation.clone(), next);
                    planned.push((&append.conversation, next));
                    touched.insert(&append.conversation, now);
                    staged.push(Some(out));
                }
            }
        }
        let mut tx = self.conn.begin().await?;
        for (append, events) in appends.iter().zip(&staged) {
            let Some(events) = events else { continue };
            for event in events {
                sqlx::query("INSERT INTO events (conversation_id, id, json) VALUES (?, ?, ?)")
                    .bind(append.conversation.as_str())
                    .bind(to_i64(event.id.0))
                    .bind(&*event.json)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for (conversation, at) in &touched {
            sqlx::query("UPDATE conversations SET last_updated_at = ? WHERE id = ?")
                .bind(at.as_datetime().to_rfc3339())
                .bind(conversation.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        for (append, events) in appends.iter().zip(staged) {
            results.push(
                events.ok_or_else(|| StoreError::ConversationNotFound(append.conversation.clone())),
            );
        }
        Ok(results)
    }
}
