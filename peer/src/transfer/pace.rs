//! A rate limit shared by several threads: the server's `--max-upload-rate`
//! over all its connections, and `get --max-download-rate` over all sources.
//!
//! Each piece of data reserves its slot in time ([`Pacer::reserve`]); the
//! thread that moves it sleeps until its slot starts. Slots are reserved one
//! after the other, so the rate holds for all threads together, and a pause
//! earns no burst later (the next slot starts no earlier than now).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A shared rate limit in bytes per second.
#[derive(Debug)]
pub struct Pacer {
    rate: u64,
    /// When the next piece may start.
    next: Mutex<Instant>,
}

impl Pacer {
    /// A limit of `rate` bytes per second; `None` for no limit (0 or absent).
    pub fn new(rate: Option<u64>) -> Option<Pacer> {
        rate.filter(|r| *r > 0).map(|rate| Pacer {
            rate,
            next: Mutex::new(Instant::now()),
        })
    }

    /// The limit, in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// How long to wait before moving `n` bytes.
    pub fn reserve(&self, n: u64) -> Duration {
        let now = Instant::now();
        let mut next = match self.next.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(n as f64 / self.rate as f64);
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_each_other_at_the_rate() {
        assert!(Pacer::new(None).is_none());
        assert!(Pacer::new(Some(0)).is_none());
        let Some(p) = Pacer::new(Some(1000)) else {
            panic!("a limit");
        };
        assert_eq!(p.rate(), 1000);
        // The first piece starts now; the next one a second of bytes later.
        assert!(p.reserve(1000) < Duration::from_millis(50));
        let wait = p.reserve(500);
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        let wait = p.reserve(1);
        assert!(wait > Duration::from_millis(1400), "{wait:?}");
    }
}
