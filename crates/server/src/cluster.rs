//! Several ohd nodes over one PostgreSQL: which node runs a conversation's agent.
//!
//! Any node stores what any client sends and serves any client; only the node holding a
//! conversation's lease runs its agent and sandbox. The lease is taken when an agent is wanted
//! and nobody holds it (a message, a join), renewed by a heartbeat while the agent runs, and
//! released when the agent ends. Every append the agent makes carries the lease's fencing token
//! and is checked in the append's transaction ([`ohd_store::EventLog::fenced`]), so a node that
//! lost its lease (paused, cut off from the database) can never append as owner again; the
//! heartbeat stops its agent as soon as the lease is no longer sure.
//!
//! A lease that lapses without a release means its node died or lost the database: every node
//! looks for such leases each second ([`watch_lapsed_leases`]) and the first to take one starts
//! the agent, which resumes from the log as after a restart (an action cut off gets an error
//! observation, a waiting message is answered).

use crate::agents::Agents;
use ohd_protocol::ConversationId;
use ohd_store::{Fence, LeaseStore, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often each node looks for lapsed leases: a dead owner's conversations are taken over
/// within this long after its lease lapses.
const TAKEOVER_SCAN: Duration = Duration::from_secs(1);
/// Lapsed leases taken up per scan, at most.
const TAKEOVER_BATCH: usize = 64;

pub struct Cluster {
    /// This node's name in leases and logs.
    pub node: String,
    pub leases: Arc<dyn LeaseStore>,
    /// Where the providers each conversation's clients named are kept for its owner.
    pub documents: Arc<dyn ohd_store::DocumentStore>,
    /// A lease not renewed for this long lapses.
    pub ttl: Duration,
}

/// The document of the providers a conversation's clients named (`providers_set`).
fn providers_document(conversation: &ConversationId) -> String {
    format!("providers/{conversation}")
}

impl Cluster {
    /// The providers clients named for the conversation, on any node.
    pub async fn named_providers(&self, conversation: &ConversationId) -> Vec<String> {
        match self
            .documents
            .get_document(&providers_document(conversation))
            .await
        {
            Ok(Some(json)) => serde_json::from_str(&json).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Forgets the providers named for a deleted conversation.
    pub async fn forget_providers(&self, conversation: &ConversationId) {
        if let Err(e) = self
            .documents
            .delete_document(&providers_document(conversation))
            .await
        {
            tracing::debug!(%conversation, error = %e, "named providers not forgotten");
        }
    }

    /// Adds `providers` to those named for the conversation, so that its owner, on whichever
    /// node, gives its shell their tokens (as a join on the owner's node does).
    pub async fn name_providers(&self, conversation: &ConversationId, providers: &[String]) {
        let name = providers_document(conversation);
        for _ in 0..5 {
            let current = match self.documents.get_document(&name).await {
                Ok(current) => current,
                Err(e) => {
                    tracing::debug!(%conversation, error = %e, "providers not shared");
                    return;
                }
            };
            let mut named: Vec<String> = current
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default();
            let before = named.len();
            for provider in providers {
                if !named.contains(provider) {
                    named.push(provider.clone());
                }
            }
            if named.len() == before {
                return;
            }
            let json = serde_json::to_string(&named).unwrap_or_else(|_| "[]".to_owned());
            match self
                .documents
                .replace_document(&name, current.as_deref(), &json)
                .await
            {
                Ok(true) => return,
                Ok(false) => continue,
                Err(e) => {
                    tracing::debug!(%conversation, error = %e, "providers not shared");
                    return;
                }
            }
        }
    }

    /// Takes the conversation's lease, if nobody else holds it.
    pub async fn acquire(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Fence>, StoreError> {
        self.leases
            .try_acquire_lease(conversation, &self.node, self.ttl)
            .await
    }

    /// Renews `fence` (asked for at `asked`) until `done` is cancelled, then releases it. If
    /// the lease is lost (another node took it, or it could not be renewed in time, so it may
    /// lapse), `lost` is cancelled at once and nothing is released. Returns whether the lease
    /// was held to the end.
    pub async fn hold(
        &self,
        fence: Fence,
        asked: Instant,
        done: CancellationToken,
        lost: CancellationToken,
    ) -> bool {
        let every = self.ttl / 3;
        // Counted from before each request was sent, so the database's expiry is later still;
        // and a quarter of the lease early, so the agent is gone before another node can start.
        let margin = self.ttl / 4;
        let mut sure_until = asked + self.ttl - margin;
        loop {
            let wait = every.min(sure_until.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = done.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            if Instant::now() >= sure_until {
                tracing::warn!(conversation = %fence.conversation, node = %self.node, "the lease could not be renewed in time; this node stops the conversation's agent");
                lost.cancel();
                return false;
            }
            let sent = Instant::now();
            // A database that does not answer (a partition) must not hold the heartbeat past
            // the moment the lease may lapse.
            let renewing = self.leases.renew_lease(&fence, self.ttl);
            let Ok(renewed) =
                tokio::time::timeout(sure_until.saturating_duration_since(sent), renewing).await
            else {
                tracing::warn!(conversation = %fence.conversation, node = %self.node, "the lease could not be renewed in time; this node stops the conversation's agent");
                lost.cancel();
                return false;
            };
            match renewed {
                Ok(true) => sure_until = sent + self.ttl - margin,
                Ok(false) => {
                    tracing::warn!(conversation = %fence.conversation, node = %self.node, "the lease was lost to another node; this node stops the conversation's agent");
                    lost.cancel();
                    return false;
                }
                // Tried again at the next beat, while the lease is still sure.
                Err(e) => {
                    tracing::warn!(conversation = %fence.conversation, error = %e, "lease not renewed");
                }
            }
        }
        match tokio::time::timeout(self.ttl, self.leases.release_lease(&fence)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(conversation = %fence.conversation, error = %e, "lease not released; it lapses instead")
            }
            Err(_) => {
                tracing::warn!(conversation = %fence.conversation, "lease not released in time; it lapses instead")
            }
        }
        true
    }
}

/// Each second, takes over conversations whose owner stopped renewing its lease, until `stop`.
pub async fn watch_lapsed_leases(
    cluster: Arc<Cluster>,
    agents: Arc<Agents>,
    log: ohd_store::EventLog,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TAKEOVER_SCAN) => {}
        }
        match cluster.leases.lapsed_leases(TAKEOVER_BATCH).await {
            Ok(lapsed) => {
                // Every node tries; the first to take the lease starts the agent (and says so).
                for conversation in lapsed {
                    tracing::debug!(%conversation, "a lease lapsed");
                    // The shell gets the token of the conversation's repository's provider, as
                    // it had when its repository was chosen.
                    let providers: Vec<String> =
                        match log.store().get_conversation(&conversation).await {
                            Ok(Some(record)) => record.git_provider.into_iter().collect(),
                            // Deleted since: its lease ends, and nothing starts.
                            Ok(None) => {
                                let _ = cluster.leases.revoke_lease(&conversation).await;
                                continue;
                            }
                            Err(_) => Vec::new(),
                        };
                    agents.ensure(&conversation, &providers);
                }
            }
            Err(e) => tracing::debug!(error = %e, "lapsed leases not read"),
        }
    }
}

/// How often a node says which conversations its clients look at, learns which of the
/// conversations it runs are looked at elsewhere, and takes the providers named elsewhere.
const VIEWERS_EVERY: Duration = Duration::from_secs(2);
/// How long such a word holds: several beats, so one late beat changes nothing.
const VIEWERS_TTL: Duration = Duration::from_secs(10);

/// Keeps an agent that someone on another node looks at from being released for being idle,
/// as it is for someone on its own node.
pub async fn share_viewers(cluster: Arc<Cluster>, agents: Arc<Agents>, stop: CancellationToken) {
    loop {
        let watched = agents.watched_here();
        if let Err(e) = cluster
            .leases
            .mark_watched(&cluster.node, &watched, VIEWERS_TTL)
            .await
        {
            tracing::debug!(error = %e, "viewers not shared");
        }
        let running = agents.running_here();
        let ids: Vec<ConversationId> = running.iter().map(|(id, _)| id.clone()).collect();
        match cluster.leases.watched_elsewhere(&cluster.node, &ids).await {
            Ok(elsewhere) => {
                for (id, presence) in &running {
                    presence.set_watched_elsewhere(elsewhere.contains(id));
                }
            }
            Err(e) => tracing::debug!(error = %e, "viewers elsewhere not read"),
        }
        // Providers named on other nodes reach the shells here that have not started yet.
        for id in &ids {
            let named = cluster.named_providers(id).await;
            if !named.is_empty() {
                agents.add_providers(id, &named);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(VIEWERS_EVERY) => {}
        }
    }
}
