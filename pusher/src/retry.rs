//! Bounded retries with exponential backoff and jitter, for manifest writers that lost a
//! race and for `ferry gc` waiting for the lease.

use std::time::Duration;

/// How often and how long a write is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts at most.
    pub attempts: u32,
    /// Time at most, from the first attempt; a lease that is held longer than what is left
    /// of it is not waited for.
    pub budget: Duration,
    /// The first backoff; it doubles per attempt.
    pub base: Duration,
    /// The longest backoff.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 30,
            budget: Duration::from_secs(60),
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: exponential, capped, times a random factor in
    /// [0.5, 1.5) so that writers that collided do not collide again.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        exp.min(self.cap).mul_f64(jitter.clamp(0.5, 1.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(4, 1.0), Duration::from_millis(800));
        assert_eq!(p.backoff(6, 1.0), Duration::from_secs(2));
        assert_eq!(p.backoff(60, 1.0), Duration::from_secs(2));
        assert_eq!(p.backoff(1, 0.5), Duration::from_millis(50));
        assert_eq!(p.backoff(1, 9.0), Duration::from_millis(150));
    }
}
