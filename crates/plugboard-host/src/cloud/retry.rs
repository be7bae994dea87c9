//! Retries of provider calls: which errors to retry, how long to wait
//! (the provider's `Retry-After` when it gives one, else exponential
//! backoff with a cap), and when to give up. The decision is
//! [`next_delay`], a pure function; [`with_retries`] only sleeps on it.

use std::future::Future;
use std::time::Duration;

use super::ProviderError;

/// How a provider call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait.
    pub base: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
    /// Attempts in all (the first included).
    pub max_attempts: u32,
    /// The longest `Retry-After` honoured; a provider asking for more is
    /// given up on (the caller reports its message).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Half a second doubling to 10 s, 6 attempts; a `Retry-After` of up
    /// to a minute is honoured (Lambda asks for about 12 s between
    /// launches).
    fn default() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_attempts: 6,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// How long to wait before attempt `attempt + 1` after `attempt` (1-based)
/// failed with `error`, or `None` to give up.
pub fn next_delay(policy: &RetryPolicy, attempt: u32, error: &ProviderError) -> Option<Duration> {
    if !error.is_retryable() || attempt >= policy.max_attempts {
        return None;
    }
    if let Some(after) = error.retry_after() {
        return (after <= policy.max_retry_after).then_some(after);
    }
    let exp = attempt.saturating_sub(1).min(20);
    let delay = policy.base.saturating_mul(1u32 << exp);
    Some(delay.min(policy.max_delay))
}

/// Runs `call` until it succeeds, fails for good, or the policy gives up;
/// each retry is logged with the provider's message.
pub async fn with_retries<T, F, Fut>(policy: &RetryPolicy, what: &str, mut call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => match next_delay(policy, attempt, &e) {
                Some(d) => {
                    tracing::info!(what, attempt, wait_ms = d.as_millis() as u64, error = %e, "retrying a provider call");
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                None => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> ProviderError {
        ProviderError::Transient {
            provider: "test",
            what: "x".into(),
            message: "HTTP 500".into(),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let p = RetryPolicy::default();
        let waits: Vec<_> = (1..=6).map(|a| next_delay(&p, a, &transient())).collect();
        assert_eq!(
            waits,
            vec![
                Some(Duration::from_millis(500)),
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(4)),
                Some(Duration::from_secs(8)),
                None
            ]
        );
        let long = RetryPolicy { max_attempts: 30, ..p };
        assert_eq!(next_delay(&long, 25, &transient()), Some(Duration::from_secs(10)));
    }

    #[test]
    fn retry_after_is_honoured_within_its_limit() {
        let p = RetryPolicy::default();
        let limited = |s| ProviderError::RateLimited {
            provider: "test",
            retry_after: Some(Duration::from_secs(s)),
            message: "slow down".into(),
        };
        assert_eq!(next_delay(&p, 1, &limited(12)), Some(Duration::from_secs(12)));
        assert_eq!(next_delay(&p, 1, &limited(3600)), None);
        let unsaid = ProviderError::RateLimited {
            provider: "test",
            retry_after: None,
            message: "slow down".into(),
        };
        assert_eq!(next_delay(&p, 2, &unsaid), Some(Duration::from_secs(1)));
    }

    #[test]
    fn refusals_and_capacity_are_not_retried() {
        let p = RetryPolicy::default();
        let refused = ProviderError::Refused {
            provider: "test",
            what: "launch".into(),
            message: "bad instance type".into(),
        };
        let capacity = ProviderError::Capacity {
            provider: "test",
            region: "r".into(),
            message: "none".into(),
        };
        assert_eq!(next_delay(&p, 1, &refused), None);
        assert_eq!(next_delay(&p, 1, &capacity), None);
    }

    #[tokio::test]
    async fn with_retries_stops_at_the_first_success() {
        let quick = RetryPolicy {
            base: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let r = with_retries(&quick, "test", || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(transient()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.ok(), Some(3));
    }
}
