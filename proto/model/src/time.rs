use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: microseconds since the Unix epoch.
///
/// The master's and agent's cores never read a clock; the drivers pass `now`
/// in. Wall-clock time (rather than a monotonic instant) is used because some
/// times outlive the process (when an agent became unreachable, when a
/// framework disconnected) and timestamps go to frameworks as Unix seconds.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);
    pub const MAX: Time = Time(u64::MAX);

    pub const fn from_micros(micros: u64) -> Self {
        Time(micros)
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The current time. Only drivers call this, never a core.
    ///
    /// It is the wall clock read once, at the process's first call, plus a
    /// monotonic clock since: timers never jump when the system clock is
    /// stepped (an NTP correction, a resumed VM), which would otherwise mark
    /// every agent unreachable at once or stall every timer.
    pub fn now() -> Self {
        static ANCHOR: OnceLock<(u64, Instant)> = OnceLock::new();
        let (wall, mono) = *ANCHOR.get_or_init(|| {
            let since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            (
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX),
                Instant::now(),
            )
        });
        let elapsed = u64::try_from(mono.elapsed().as_micros()).unwrap_or(u64::MAX);
        Time(wall.saturating_add(elapsed))
    }

    pub fn from_unix_secs_f64(secs: f64) -> Option<Self> {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        let micros = secs * 1e6;
        if micros >= u64::MAX as f64 {
            return None;
        }
        // Truncation to whole microseconds is intended.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(Time(micros as u64))
    }

    pub fn as_unix_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self + d`, saturating at `Time::MAX`.
    pub fn saturating_add(self, d: Duration) -> Self {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(micros))
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        self.saturating_add(d)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}", self.as_unix_secs_f64())
    }
}
