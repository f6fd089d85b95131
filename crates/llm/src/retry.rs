//! Sending a request again after a rate limit, a server error or a broken connection: how long
//! to wait, and telling the agent while it waits.

use std::future::Future;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use crate::error::LlmError;

/// Told about each retry before its wait, so the agent can show the `rate_limited` state while
/// the client waits and go back to `running` when it tries again.
pub trait RetryObserver: Send + Sync {
    /// `attempt` counts retries from 1; `reason` is why the last attempt failed.
    fn retrying(&self, attempt: u32, wait: Duration, reason: &LlmError);

    /// The wait is over and the request is being sent again.
    fn resumed(&self) {}
}

/// For callers that don't need to know.
impl RetryObserver for () {
    fn retrying(&self, _attempt: u32, _wait: Duration, _reason: &LlmError) {}
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 sends each request once.
    pub max_retries: u32,
    /// The first backoff; each retry doubles it.
    pub min_wait: Duration,
    /// The backoff never grows past this.
    pub max_wait: Duration,
    /// A `Retry-After` longer than this is not waited out: the error goes back to the caller.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            min_wait: Duration::from_secs(2),
            max_wait: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before retry number `retry` (from 1) after `err`, or `None` to give up.
    /// The provider's `Retry-After` is waited exactly: it knows when its window resets, and an
    /// earlier retry only spends an attempt. Otherwise the backoff is exponential with jitter
    /// (between half and all of the step), so clients that failed together don't retry together.
    pub fn wait(&self, retry: u32, err: &LlmError) -> Option<Duration> {
        if let Some(asked) = err.retry_after() {
            return (asked <= self.max_retry_after).then_some(asked);
        }
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        let step = self.min_wait.saturating_mul(factor).min(self.max_wait);
        let half = step / 2;
        Some(half + half.mul_f64(fastrand::f64()))
    }
}

/// Runs `attempt` until it succeeds, fails in a way a retry won't fix, or the retries run out.
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    observer: &dyn RetryObserver,
    mut attempt: F,
) -> Result<T, LlmError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, LlmError>>,
{
    let mut retries = 0;
    loop {
        let err = match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let wait = match policy.wait(retries + 1, &err) {
            Some(wait) if err.is_retryable() && retries < policy.max_retries => wait,
            _ => {
                // A retryable failure left unretried (the retries ran out, or the provider asked
                // for too long a wait) is worth a line: the user's state goes to error next.
                if err.is_retryable() {
                    tracing::warn!(retries, error = %err, "LLM request failed; giving up");
                }
                return Err(err);
            }
        };
        retries += 1;
        tracing::warn!(
            retry = retries,
            wait_ms = wait.as_millis() as u64,
            error = %err,
            "LLM request failed; retrying"
        );
        observer.retrying(retries, wait, &err);
        tokio::time::sleep(wait).await;
        observer.resumed();
    }
}

/// The wait a response asks for: `retry-after-ms` (OpenAI's, milliseconds), else `Retry-After`
/// in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_in_each_form() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));

        let mut headers = HeaderMap::new();
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        headers.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );

        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let policy = RetryPolicy {
            min_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        let err = LlmError::Server {
            status: 500,
            message: String::new(),
        };
        for (retry, step) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (30, 5.0)] {
            let wait = policy.wait(retry, &err).unwrap().as_secs_f64();
            assert!(wait >= step / 2.0 && wait <= step, "retry {retry}: {wait}");
        }
    }

    #[test]
    fn a_retry_after_beyond_the_limit_is_not_waited() {
        let policy = RetryPolicy::default();
        let err = LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
            message: String::new(),
        };
        assert_eq!(policy.wait(1, &err), None);
        let err = LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: String::new(),
        };
        assert_eq!(policy.wait(1, &err), Some(Duration::from_secs(7)));
    }
}
