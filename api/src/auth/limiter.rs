//! The failed-login limit: after `login_max_failures` wrong passwords for one username
//! from one client address within `login_window_secs`, further attempts for that pair
//! (right or wrong) are answered 429 until the window ends. Successful logins clear the
//! pair's count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// Tracked pairs beyond which expired windows are swept on insert.
const SOFT_CAP: usize = 100_000;

struct Window {
    failures: u32,
    since: Instant,
}

/// Counts failed logins per `(username, address)`.
pub(crate) struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    windows: Mutex<HashMap<(String, IpAddr), Window>>,
}

impl LoginLimiter {
    pub(crate) fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            windows: Mutex::default(),
        }
    }

    /// `Err(RateLimited)` while the pair is locked out.
    pub(crate) fn check(&self, username: &str, ip: IpAddr) -> Result<()> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.is_empty() {
            return Ok(());
        }
        if let Some(window) = windows.get(&(username.to_owned(), ip)) {
            let elapsed = window.since.elapsed();
            if window.failures >= self.max_failures && elapsed < self.window {
                let left = self.window - elapsed;
                // Round up so a client waiting exactly Retry-After is let in.
                let retry_after_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                return Err(Error::RateLimited { retry_after_secs });
            }
        }
        Ok(())
    }

    /// Records a failed attempt.
    pub(crate) fn failed(&self, username: &str, ip: IpAddr) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= SOFT_CAP {
            let window = self.window;
            windows.retain(|_, w| w.since.elapsed() < window);
        }
        let now = Instant::now();
        let entry = windows.entry((username.to_owned(), ip)).or_insert(Window {
            failures: 0,
            since: now,
        });
        if entry.since.elapsed() >= self.window {
            *entry = Window {
                failures: 0,
                since: now,
            };
        }
        entry.failures += 1;
    }

    /// Clears the pair after a successful login.
    pub(crate) fn succeeded(&self, username: &str, ip: IpAddr) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !windows.is_empty() {
            windows.remove(&(username.to_owned(), ip));
        }
    }

    /// Forgets windows that ended (called periodically).
    pub(crate) fn sweep(&self) {
        let window = self.window;
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, w| w.since.elapsed() < window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn locks_out_after_the_limit_until_the_window_ends() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        limiter.failed("bot", ip);
        assert!(limiter.check("bot", ip).is_ok());
        limiter.failed("bot", ip);
        let Err(Error::RateLimited { retry_after_secs }) = limiter.check("bot", ip) else {
            panic!("expected a lockout");
        };
        assert_eq!(retry_after_secs, 60);
        assert!(
            limiter.check("bot", other).is_ok(),
            "other addresses are unaffected"
        );
        assert!(
            limiter.check("admin", ip).is_ok(),
            "other usernames are unaffected"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(limiter.check("bot", ip).is_ok());
        limiter.failed("bot", ip);
        assert!(
            limiter.check("bot", ip).is_ok(),
            "a new window starts from zero"
        );
        limiter.succeeded("bot", ip);
        limiter.sweep();
        assert!(limiter.windows.lock().unwrap().is_empty());
    }
}
