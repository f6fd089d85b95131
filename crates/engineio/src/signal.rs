//! Two small wake-up primitives for the per-delivery hot path, where tokio-util's
//! `CancellationToken` (a mutex per check) and `Notify` (a mutex per registration) showed up in
//! profiles of a 1,000-client fan-out: both are checked or waited on once per event per client.

use futures::task::AtomicWaker;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use tokio::sync::Notify;

/// A one-way flag: cheap to check (one atomic load), and awaitable by any number of tasks.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    notify: Notify,
}

impl Signal {
    pub fn new() -> Self {
        Signal::default()
    }

    /// Raises the flag and wakes every waiter; later calls do nothing.
    pub fn raise(&self) {
        if !self.raised.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves once the flag is raised.
    pub async fn raised(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a raise in between is not missed.
            notified.as_mut().enable();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

/// Wakes the one task that writes to a client: many producers, one consumer at a time. A wake
/// with nobody waiting is kept for the next wait.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    pub fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.pending.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A notify between the check and the registration would otherwise be lost.
            if self.pending.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_signal_wakes_every_waiter_and_stays_raised() {
        let signal = Arc::new(Signal::new());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = signal.clone();
                tokio::spawn(async move { s.raised().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!signal.is_raised());
        signal.raise();
        for w in waiters {
            assert!(
                tokio::time::timeout(Duration::from_secs(1), w)
                    .await
                    .is_ok()
            );
        }
        signal.raised().await;
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept() {
        let wake = Wake::default();
        wake.notify();
        let woke = tokio::time::timeout(Duration::from_millis(100), wake.wait()).await;
        assert!(woke.is_ok());
        let again = tokio::time::timeout(Duration::from_millis(50), wake.wait()).await;
        assert!(again.is_err(), "one notify, one wake");
    }
}
