//! The restart decision, apart from the threads that act on it.

use std::time::Duration;

use super::status::ExitInfo;
use crate::manifest::{Restart, RestartPolicy};

/// The longest backoff between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// After an unrequested exit, how long to wait before restarting, or `None`
/// when the policy says not to: `never`; `on-failure` after a success; or
/// `max_restarts` already used. The backoff doubles per restart, capped at
/// [`MAX_BACKOFF`].
pub fn next_restart(policy: &Restart, exit: ExitInfo, restarts_so_far: u32) -> Option<Duration> {
    let wanted = match policy.policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => !exit.success(),
        RestartPolicy::Always => true,
    };
    if !wanted || restarts_so_far >= policy.max_restarts {
        return None;
    }
    let factor = 1u64 << restarts_so_far.min(16);
    Some(Duration::from_millis(policy.backoff_ms.saturating_mul(factor)).min(MAX_BACKOFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(p: RestartPolicy, max: u32, backoff_ms: u64) -> Restart {
        Restart {
            policy: p,
            max_restarts: max,
            backoff_ms,
        }
    }
    const FAIL: ExitInfo = ExitInfo {
        code: Some(3),
        signal: None,
    };
    const OK: ExitInfo = ExitInfo {
        code: Some(0),
        signal: None,
    };

    #[test]
    fn never_never_restarts() {
        assert_eq!(next_restart(&policy(RestartPolicy::Never, 5, 100), FAIL, 0), None);
    }

    #[test]
    fn on_failure_restarts_failures_only() {
        let p = policy(RestartPolicy::OnFailure, 5, 100);
        assert_eq!(next_restart(&p, OK, 0), None);
        assert_eq!(next_restart(&p, FAIL, 0), Some(Duration::from_millis(100)));
        let killed = ExitInfo {
            code: None,
            signal: Some(9),
        };
        assert_eq!(next_restart(&p, killed, 0), Some(Duration::from_millis(100)));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy(RestartPolicy::Always, 100, 500);
        let delays: Vec<_> = (0..8).filter_map(|n| next_restart(&p, OK, n)).collect();
        assert_eq!(delays[0], Duration::from_millis(500));
        assert_eq!(delays[1], Duration::from_millis(1000));
        assert_eq!(delays[2], Duration::from_millis(2000));
        assert_eq!(delays[7], MAX_BACKOFF);
        assert_eq!(
            next_restart(&policy(RestartPolicy::Always, 100, u64::MAX), OK, 40),
            Some(MAX_BACKOFF)
        );
    }

    #[test]
    fn max_restarts_is_a_hard_limit() {
        let p = policy(RestartPolicy::Always, 2, 1);
        assert!(next_restart(&p, FAIL, 1).is_some());
        assert_eq!(next_restart(&p, FAIL, 2), None);
        assert_eq!(next_restart(&policy(RestartPolicy::Always, 0, 1), FAIL, 0), None);
    }
}
