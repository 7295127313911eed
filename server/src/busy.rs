//! How busy a device has been lately: the share of the last second during which a kernel ran,
//! as NVML's `utilization.gpu` defines it ("percent of time over the past sample period during
//! which one or more kernels was executing").
//!
//! Time is kept in ten buckets of 100 ms, so recording a launch and reading the figure are O(1)
//! however many launches a second a client makes. Launches of several sessions that overlap are
//! counted once each, so the sum is capped at 100 %.

use std::sync::Mutex;
use std::time::{Duration, Instant};

const BUCKETS: usize = 10;
const BUCKET: Duration = Duration::from_millis(100);

/// One device's recent busy time.
pub struct BusyMeter {
    epoch: Instant,
    state: Mutex<State>,
}

struct State {
    /// Busy nanoseconds per bucket, indexed by bucket number modulo `BUCKETS`.
    busy: [u64; BUCKETS],
    /// The bucket number each slot holds; a slot holding an older one counts as empty.
    number: [u64; BUCKETS],
}

impl Default for BusyMeter {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl BusyMeter {
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            state: Mutex::new(State {
                busy: [0; BUCKETS],
                number: [u64::MAX; BUCKETS],
            }),
        }
    }

    fn bucket_of(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.epoch).as_nanos() / BUCKET.as_nanos()) as u64
    }

    /// Records that a kernel ran from `start` to `end`, split over the buckets it spans.
    pub fn record(&self, start: Instant, end: Instant) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (first, last) = (self.bucket_of(start), self.bucket_of(end));
        // Only the last second matters: older parts of a long launch are not kept.
        for b in first.max(last.saturating_sub(BUCKETS as u64 - 1))..=last {
            let lo = (self.epoch + BUCKET * b as u32).max(start);
            let hi = (self.epoch + BUCKET * (b as u32 + 1)).min(end);
            let ns = hi.saturating_duration_since(lo).as_nanos() as u64;
            let slot = (b % BUCKETS as u64) as usize;
            if st.number[slot] != b {
                st.number[slot] = b;
                st.busy[slot] = 0;
            }
            st.busy[slot] += ns;
        }
    }

    /// Percent of the second before `now` during which kernels ran, 0..=100.
    pub fn percent(&self, now: Instant) -> u32 {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.bucket_of(now);
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        let busy: u64 = (0..BUCKETS)
            .filter(|&s| {
                st.number[s] != u64::MAX && st.number[s] >= oldest && st.number[s] <= current
            })
            .map(|s| st.busy[s])
            .sum();
        // The window is the nine whole buckets before the current one and the current one so
        // far: about the last second, at 100 ms granularity.
        let start = self.epoch + BUCKET * oldest as u32;
        let window = (now.saturating_duration_since(start).as_nanos() as u64).max(1);
        (busy.saturating_mul(100) / window).min(100) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn idle_device_is_zero_percent() {
        let t0 = Instant::now();
        let m = BusyMeter::new(t0);
        assert_eq!(m.percent(t0 + ms(500)), 0);
    }

    #[test]
    fn half_of_the_last_second_busy_is_fifty_percent() {
        let t0 = Instant::now();
        let m = BusyMeter::new(t0);
        m.record(t0 + ms(1000), t0 + ms(1250));
        m.record(t0 + ms(1500), t0 + ms(1750));
        assert_eq!(m.percent(t0 + ms(1999)), 50);
    }

    #[test]
    fn busy_time_older_than_a_second_is_forgotten() {
        let t0 = Instant::now();
        let m = BusyMeter::new(t0);
        m.record(t0, t0 + ms(900));
        assert!((90..=95).contains(&m.percent(t0 + ms(950))));
        assert_eq!(m.percent(t0 + ms(2500)), 0);
    }

    #[test]
    fn a_launch_longer_than_the_window_counts_only_its_last_second() {
        let t0 = Instant::now();
        let m = BusyMeter::new(t0);
        m.record(t0, t0 + ms(5000));
        assert_eq!(m.percent(t0 + ms(5000)), 100);
    }

    #[test]
    fn overlapping_sessions_never_exceed_one_hundred_percent() {
        let t0 = Instant::now();
        let m = BusyMeter::new(t0);
        m.record(t0, t0 + ms(999));
        m.record(t0, t0 + ms(999));
        assert_eq!(m.percent(t0 + ms(999)), 100);
    }
}
