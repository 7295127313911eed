//! Remora's congestion controller, the default (`REMORA_CONGESTION=tolerant`): Cubic that
//! tells random loss from congestion by delay.
//!
//! Cubic (RFC 9438) takes 30 % off its window at every loss. On a link that loses 1 % of its
//! datagrams at random that is a cut every round trip or two, and a 256 MiB copy at 1 Gbit/s
//! and 30 ms got a fifth of the link. But a router queue that overflows was full, and so slowed
//! every datagram in it, before it dropped one; a datagram lost on the wire was not delayed. So
//! at each congestion event this controller looks at the recent round trip (the least sample of
//! the last half to whole minimum round trip, so that a late acknowledgement or a short stall
//! does not count) against the least ever seen:
//!
//! - **No queue** (less than the margin max(min RTT / 8, 2 ms) above the minimum): the loss is
//!   taken as random and the window is kept.
//! - **A queue**: the window is cut to what would drain it, `window x (min RTT + half the margin)
//!   / recent RTT`, but never by more than Cubic's 30 % (so a full drop-tail queue, whose delay
//!   is large, gets exactly Cubic's answer), and Cubic regrows towards where it was.
//! - **Congestion whatever the delay**: more than 10 % of the bytes of the last round trip or two
//!   lost (a queue too shallow to show in the delay still shows in the loss), an ECN mark, no
//!   round-trip sample yet, or persistent congestion (RFC 9002 §7.6: back to the minimum
//!   window).
//!
//! Between congestion events, Cubic grows the window, except that a window in use on a path
//! that shows no queue at all (less than a quarter of the margin) is below the
//! bandwidth-delay product, and is refilled at 1.25x a round trip instead: so a cut that took
//! too much, or that a stall made look needed, costs a few round trips, not Cubic's seconds.
//! Only a window at least half in flight grows, so that a pacer or an application that leaves
//! it empty does not inflate it past what the path was shown.
//!
//! Slow start leaves by delay as HyStart++ (RFC 9406) does: when a round's least round trip
//! has risen by an eighth (4-16 ms) over the last round's, or the recent round trip by as much
//! over the minimum (the window doubles each round, so a queue that starts within a round
//! would otherwise show only when the window is twice what filled the link), growth slows to a
//! quarter for five rounds (conservative slow start) and then Cubic takes over; if the queue
//! goes again, slow start resumes. Random loss, ignored, does not end slow start early.
//!
//! Round trips are counted by send time: a round ends when a packet sent after it began is
//! acknowledged. Every round-trip sample is a packet's own (`now - sent` at its
//! acknowledgement), so the minimum and the recent round trips are measured alike.
//!
//! Measured through the relay (`benches/benches/distance.rs`, 256 MiB each way, 1 Gbit/s,
//! 30 ms, a drop-tail queue of twice the bandwidth-delay product): 0.83-0.89x of the cap at 1 %
//! random loss each way, where quinn's Cubic got 0.20-0.28x and its BBR 0.18-0.67x; 0.86-0.92x
//! on the clean link, as Cubic (0.87-0.92x). See `congestion()` in `endpoint.rs`.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

/// Cubic's multiplicative decrease (RFC 9438): the most one congestion event takes off.
const BETA: f64 = 0.7;
/// Cubic's growth constant, in datagrams per second cubed.
const C: f64 = 0.4;
/// The Reno-friendly estimate's growth per round trip, in datagrams (RFC 9438 §4.3).
const ALPHA: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);
/// A queue is delay above the minimum round trip of more than the larger of min RTT / this and
/// [`QUEUE_FLOOR`].
const QUEUE_DIVISOR: u32 = 8;
const QUEUE_FLOOR: Duration = Duration::from_millis(2);
/// Below a quarter of that margin there is no queue, and a window in use grows by a quarter of
/// what is acknowledged (1.25x a round trip, as conservative slow start) instead of along
/// Cubic's curve.
const REFILL_MARGIN_DIVISOR: u32 = 4;
const REFILL_DIVISOR: u64 = 4;
/// Above this share of the bytes of the last round trip or two lost, loss is congestion
/// whatever the delay says; judged only once they hold at least a window's worth of bytes, as
/// a few datagrams are too few to tell 1 % from 10 %.
const CONGESTED_LOSS_RATE: f64 = 0.1;
/// HyStart++ (RFC 9406 §4.3): samples a round needs before its minimum is compared, the bounds
/// of the rise that ends slow start, conservative slow start's divisor and length.
const HYSTART_SAMPLES: u32 = 8;
const HYSTART_MIN_RISE: Duration = Duration::from_millis(4);
const HYSTART_MAX_RISE: Duration = Duration::from_millis(16);
const CSS_GROWTH_DIVISOR: u64 = 4;
const CSS_ROUNDS: u32 = 5;

/// Builds [`LossTolerant`] controllers.
#[derive(Debug, Clone)]
pub struct LossTolerantConfig {
    initial_window: u64,
}

impl LossTolerantConfig {
    /// The window, in bytes, before anything is acknowledged.
    pub fn initial_window(&mut self, bytes: u64) -> &mut Self {
        self.initial_window = bytes;
        self
    }
}

impl Default for LossTolerantConfig {
    /// RFC 9002's initial window at quinn's 1200-byte base datagram.
    fn default() -> Self {
        Self {
            initial_window: 14_720.clamp(2 * 1200, 10 * 1200),
        }
    }
}

impl ControllerFactory for LossTolerantConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(LossTolerant::new(self, now, current_mtu))
    }
}

/// Cubic that keeps its window at a loss the delay says was random; see the module docs.
#[derive(Debug, Clone)]
pub struct LossTolerant {
    config: Arc<LossTolerantConfig>,
    mtu: u64,
    window: u64,
    /// Below it, slow start (or conservative slow start, with `css`); at or above, Cubic.
    ssthresh: u64,
    css: Option<Css>,
    /// When the window was last cut: acknowledgements of packets sent before then do not grow
    /// it, and their losses belong to the same event.
    recovery_start: Option<Instant>,
    cubic: CubicState,
    /// The least round trip seen, over every packet's own sample.
    min_rtt: Option<Duration>,
    recent: Recent,
    /// Bytes in flight before the acknowledgements being processed: quinn's count at the end
    /// of the last batch, plus what was sent since, less what was lost.
    in_flight: u64,
    /// In congestion avoidance, growing fast because the path shows no queue.
    refilling: bool,
    round: Rounds,
    /// What the congestion events were judged to be (for tests and tracing).
    events: Events,
}

/// Conservative slow start (RFC 9406 §4.3).
#[derive(Debug, Clone, Copy)]
struct Css {
    /// Rounds completed in it.
    rounds: u32,
}

/// Cubic's state since the last cut or the end of slow start (RFC 9438 §4), in bytes.
#[derive(Debug, Clone, Default)]
struct CubicState {
    /// The window before the last cut (or at the end of slow start).
    w_max: f64,
    /// Seconds from `epoch` until the cubic curve reaches `w_max` again.
    k: f64,
    /// When the curve began; `None` until Cubic first runs.
    epoch: Option<Instant>,
    /// The Reno-friendly estimate (RFC 9438 §4.3).
    w_est: f64,
    /// Growth below one byte, carried to the next acknowledgement.
    carry: f64,
}

/// The least round trip of the last half to whole minimum round trip: two buckets of half of it
/// each, the current one and the one before. Recent enough that a queue which has just filled
/// shows within a round trip; a minimum, so that a late acknowledgement or a stall of the
/// sender or receiver shorter than half a round trip does not look like a queue (a quarter was
/// tried, and once a stall at start-up had the window cut to a fifth of the bandwidth-delay
/// product).
#[derive(Debug, Clone, Default)]
struct Recent {
    start: Option<Instant>,
    min: Option<Duration>,
    prev_min: Option<Duration>,
}

impl Recent {
    fn sample(&mut self, now: Instant, rtt: Duration, bucket: Duration) {
        match self.start {
            Some(start) if now.saturating_duration_since(start) < bucket => {}
            Some(start) => {
                // An empty bucket in between (a pause) leaves nothing older to keep.
                self.prev_min = if now.saturating_duration_since(start) < 2 * bucket {
                    self.min
                } else {
                    None
                };
                self.min = None;
                self.start = Some(now);
            }
            None => self.start = Some(now),
        }
        self.min = Some(self.min.map_or(rtt, |m| m.min(rtt)));
    }

    /// The least of both buckets, once the older one has samples (so the two span at least
    /// half a round trip).
    fn settled(&self) -> Option<Duration> {
        self.prev_min.and(self.get())
    }

    fn get(&self) -> Option<Duration> {
        match (self.min, self.prev_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Per-round bookkeeping: a round ends when a packet sent at or after `start` is acknowledged.
#[derive(Debug, Clone)]
struct Rounds {
    start: Instant,
    min: Option<Duration>,
    samples: u32,
    prev_min: Option<Duration>,
    acked: u64,
    lost: u64,
    prev_acked: u64,
    prev_lost: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Events {
    /// Losses taken as random: the window was kept.
    pub random: u64,
    /// Cuts because the delay showed a queue.
    pub queue: u64,
    /// Cuts because of the loss rate, an ECN mark or no round-trip sample yet.
    pub other: u64,
    pub persistent: u64,
}

/// What a congestion event is taken to be.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Judgement {
    Random,
    /// Cut the window to this fraction of itself.
    Queue(f64),
    Congestion,
}

impl LossTolerant {
    pub fn new(config: Arc<LossTolerantConfig>, now: Instant, current_mtu: u16) -> Self {
        Self {
            window: config.initial_window,
            config,
            mtu: u64::from(current_mtu),
            ssthresh: u64::MAX,
            css: None,
            recovery_start: None,
            cubic: CubicState::default(),
            min_rtt: None,
            recent: Recent::default(),
            in_flight: 0,
            refilling: false,
            round: Rounds {
                start: now,
                min: None,
                samples: 0,
                prev_min: None,
                acked: 0,
                lost: 0,
                prev_acked: 0,
                prev_lost: 0,
            },
            events: Events::default(),
        }
    }

    fn minimum_window(&self) -> u64 {
        2 * self.mtu
    }

    fn in_recovery(&self, sent: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent <= start)
    }

    /// An acknowledgement of `bytes` sent at `sent`; `srtt` is the smoothed round trip.
    fn ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool, srtt: Duration) {
        let sample = now.saturating_duration_since(sent);
        if sent >= self.round.start {
            self.end_round(now);
        }
        let min = self.min_rtt.map_or(sample, |m| m.min(sample));
        self.min_rtt = Some(min);
        self.recent
            .sample(now, sample, (min / 2).max(Duration::from_millis(1)));
        self.round.min = Some(self.round.min.map_or(sample, |m| m.min(sample)));
        self.round.samples = self.round.samples.saturating_add(1);
        self.round.acked = self.round.acked.saturating_add(bytes);

        // Only a window in use grows: one the application or the pacer left half empty would
        // grow past what the path was ever shown, and overshoot the queue once it is filled.
        let used = self.in_flight.saturating_mul(2) >= self.window;
        if app_limited || !used || self.in_recovery(sent) {
            return;
        }
        if self.window < self.ssthresh {
            self.slow_start(now, bytes);
        } else {
            self.avoid_congestion(now, bytes, srtt);
        }
    }

    fn end_round(&mut self, now: Instant) {
        let r = &mut self.round;
        r.start = now;
        r.prev_min = r.min.take();
        r.samples = 0;
        r.prev_acked = r.acked;
        r.prev_lost = r.lost;
        r.acked = 0;
        r.lost = 0;
        if let Some(css) = &mut self.css {
            css.rounds += 1;
            if css.rounds >= CSS_ROUNDS {
                self.css = None;
                self.ssthresh = self.window;
                self.start_cubic(now, self.window as f64);
            }
        }
    }

    fn slow_start(&mut self, now: Instant, bytes: u64) {
        let enough = self.round.samples >= HYSTART_SAMPLES;
        let rise = |base: Duration| (base / 8).clamp(HYSTART_MIN_RISE, HYSTART_MAX_RISE);
        let recent = self.recent.settled();
        match self.css {
            Some(_) => {
                // The queue is gone again (a passing stall, not a queue): back to slow start.
                if let (Some(r), Some(min)) = (recent, self.min_rtt) {
                    if r < min + rise(min) / 2 {
                        self.css = None;
                    }
                }
            }
            None => {
                // RFC 9406: this round's least round trip against the last round's. But the
                // window doubles each round, and a queue that starts within a round shows only
                // at the next, by when the window is twice what filled the link; so also the
                // recent round trip against the least ever.
                let by_round = match (self.round.min, self.round.prev_min) {
                    (Some(min), Some(prev)) if enough && min >= prev + rise(prev) => Some(min),
                    _ => None,
                };
                let by_recent = match (recent, self.min_rtt) {
                    (Some(r), Some(min)) if r >= min + rise(min) => Some(r),
                    _ => None,
                };
                if let Some(baseline) = by_round.or(by_recent) {
                    self.css = Some(Css { rounds: 0 });
                    tracing::debug!(
                        window = self.window,
                        ?baseline,
                        min_rtt = ?self.min_rtt,
                        "slow start: the delay rose, growing slower"
                    );
                }
            }
        }
        let growth = match self.css {
            Some(_) => bytes / CSS_GROWTH_DIVISOR,
            None => bytes,
        };
        self.window = self.window.saturating_add(growth);
        if self.window >= self.ssthresh {
            self.css = None;
            self.start_cubic(now, self.window as f64);
        }
    }

    /// Starts Cubic's curve at the current window, heading for `w_max` (convex from the window
    /// at once if that is already past `w_max`).
    fn start_cubic(&mut self, now: Instant, w_max: f64) {
        let window = self.window as f64;
        let mtu = self.mtu as f64;
        self.cubic.w_max = w_max.max(window);
        self.cubic.k = ((self.cubic.w_max - window) / mtu / C).max(0.0).cbrt();
        self.cubic.epoch = Some(now);
        self.cubic.w_est = window;
        self.cubic.carry = 0.0;
    }

    /// Cubic's growth (RFC 9438 §4.2-4.4), per acknowledged byte.
    fn avoid_congestion(&mut self, now: Instant, bytes: u64, srtt: Duration) {
        // No queue at all while the window is in use: the window is below the path's
        // bandwidth-delay product (after a cut that took too much, or one a stall made look
        // needed), so refill it fast instead of along Cubic's slow curve; Cubic starts again
        // from wherever the queue shows.
        if let (Some(recent), Some(min)) = (self.recent.settled(), self.min_rtt) {
            if recent < min + queue_margin(min) / REFILL_MARGIN_DIVISOR {
                self.refilling = true;
                self.window = self.window.saturating_add(bytes / REFILL_DIVISOR);
                return;
            }
        }
        if self.refilling {
            self.refilling = false;
            self.start_cubic(now, self.window as f64);
        }
        let Some(epoch) = self.cubic.epoch else {
            self.start_cubic(now, self.window as f64);
            return;
        };
        let mtu = self.mtu as f64;
        let window = self.window as f64;
        let t = now.saturating_duration_since(epoch) + srtt;
        let target = C * (t.as_secs_f64() - self.cubic.k).powi(3) * mtu + self.cubic.w_max;
        let target = target.clamp(window, 1.5 * window);
        // The Reno-friendly estimate grows ALPHA datagrams per window acknowledged (1 once it
        // passes w_max).
        let alpha = if self.cubic.w_est < self.cubic.w_max {
            ALPHA
        } else {
            1.0
        };
        self.cubic.w_est += alpha * mtu * bytes as f64 / window;
        let growth = if target < self.cubic.w_est {
            self.cubic.w_est - window
        } else {
            (target - window) / window * bytes as f64
        };
        self.cubic.carry += growth.max(0.0);
        let whole = self.cubic.carry.floor();
        self.cubic.carry -= whole;
        self.window = self.window.saturating_add(whole as u64);
    }

    /// Packets sent up to `sent` were lost (`lost_bytes` of them; 0 for an ECN mark).
    fn congestion(&mut self, now: Instant, sent: Instant, persistent: bool, lost_bytes: u64) {
        self.round.lost = self.round.lost.saturating_add(lost_bytes);
        self.in_flight = self.in_flight.saturating_sub(lost_bytes);
        if persistent {
            self.events.persistent += 1;
            let before = self.window as f64;
            self.window = self.minimum_window();
            self.ssthresh = ((before * BETA) as u64).max(self.minimum_window());
            self.css = None;
            self.refilling = false;
            self.recovery_start = None;
            self.cubic = CubicState {
                w_max: before,
                ..CubicState::default()
            };
            tracing::debug!(window = self.window, "persistent congestion");
            return;
        }
        if self.in_recovery(sent) {
            return;
        }
        let factor = match self.judge(lost_bytes) {
            Judgement::Random => {
                self.events.random += 1;
                tracing::trace!(
                    window = self.window,
                    "loss without a queue: kept the window"
                );
                return;
            }
            Judgement::Queue(factor) => {
                self.events.queue += 1;
                factor
            }
            Judgement::Congestion => {
                self.events.other += 1;
                BETA
            }
        };
        let before = self.window as f64;
        // Fast convergence (RFC 9438 §4.7): short of the last peak, yield some of it.
        let w_max = if before < self.cubic.w_max {
            before * (1.0 + BETA) / 2.0
        } else {
            before
        };
        self.window = ((before * factor) as u64).max(self.minimum_window());
        self.ssthresh = self.window;
        self.css = None;
        self.refilling = false;
        self.recovery_start = Some(now);
        self.start_cubic(now, w_max);
        tracing::debug!(
            before,
            window = self.window,
            factor,
            min_rtt = ?self.min_rtt,
            recent = ?self.recent_rtt(),
            "congestion: cut the window"
        );
    }

    fn recent_rtt(&self) -> Option<Duration> {
        self.recent.get()
    }

    fn judge(&self, lost_bytes: u64) -> Judgement {
        if lost_bytes == 0 {
            // An ECN mark is the network saying so.
            return Judgement::Congestion;
        }
        let (Some(min), Some(recent)) = (self.min_rtt, self.recent_rtt()) else {
            return Judgement::Congestion;
        };
        let r = &self.round;
        let lost = r.lost.saturating_add(r.prev_lost) as f64;
        let sent = lost + r.acked.saturating_add(r.prev_acked) as f64;
        if sent >= self.window as f64 && lost > CONGESTED_LOSS_RATE * sent {
            return Judgement::Congestion;
        }
        let margin = queue_margin(min);
        if recent <= min + margin {
            return Judgement::Random;
        }
        // Cut what sits in the queue, leaving half the margin: the window times the share of
        // the round trip that is the path's own.
        let keep = (min + margin / 2).as_secs_f64() / recent.as_secs_f64();
        Judgement::Queue(keep.clamp(BETA, 1.0))
    }
}

/// Delay above the minimum round trip that counts as a queue.
fn queue_margin(min_rtt: Duration) -> Duration {
    (min_rtt / QUEUE_DIVISOR).max(QUEUE_FLOOR)
}

impl Controller for LossTolerant {
    fn on_sent(&mut self, _now: Instant, bytes: u64, _last_packet_number: u64) {
        self.in_flight = self.in_flight.saturating_add(bytes);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.ack(now, sent, bytes, app_limited, rtt.get());
    }

    fn on_end_acks(
        &mut self,
        _now: Instant,
        in_flight: u64,
        _app_limited: bool,
        _largest_packet_num_acked: Option<u64>,
    ) {
        self.in_flight = in_flight;
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.congestion(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
        self.window = self.window.max(self.minimum_window());
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = ControllerMetrics::default();
        m.congestion_window = self.window;
        m.ssthresh = Some(self.ssthresh);
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.config.initial_window
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: u16 = 1200;
    const INITIAL: u64 = 200 * 1200;
    const MS: Duration = Duration::from_millis(1);

    /// A controller and a clock: each round sends a window's worth paced over one round trip,
    /// and has each datagram acknowledged one round trip after it left; the next round starts
    /// sending as the first acknowledgement comes back, so acknowledgements never pause.
    struct Sim {
        c: LossTolerant,
        now: Instant,
    }

    impl Sim {
        fn new() -> Self {
            let mut config = LossTolerantConfig::default();
            config.initial_window(INITIAL);
            let now = Instant::now();
            Self {
                c: LossTolerant::new(Arc::new(config), now, MTU),
                now,
            }
        }

        /// One round trip of `rtt`; returns when its packets were sent.
        fn round(&mut self, rtt: Duration, app_limited: bool) -> Instant {
            self.send_and_ack(self.c.window(), rtt, app_limited)
        }

        /// Sends `bytes` from now on and has them acknowledged; returns when the first left.
        fn send_and_ack(&mut self, bytes: u64, rtt: Duration, app_limited: bool) -> Instant {
            let first = self.now;
            let packets = bytes / u64::from(MTU);
            let gap = rtt / u32::try_from(packets.max(1)).unwrap_or(u32::MAX);
            self.c.on_sent(first, packets * u64::from(MTU), 0);
            let mut now = first;
            for i in 0..packets {
                let sent = first + gap * i as u32;
                now = sent + rtt;
                self.c.ack(now, sent, u64::from(MTU), app_limited, rtt);
            }
            self.c.on_end_acks(now, 0, app_limited, None);
            self.now = first + rtt;
            first
        }

        fn rounds(&mut self, n: usize, rtt: Duration) -> Instant {
            let mut sent = self.now;
            for _ in 0..n {
                sent = self.round(rtt, false);
            }
            sent
        }

        /// A loss of one datagram sent at `sent`, found now.
        fn lose(&mut self, sent: Instant) {
            self.c.congestion(self.now, sent, false, u64::from(MTU));
        }
    }

    #[test]
    fn slow_start_doubles_the_window_each_round() {
        let mut s = Sim::new();
        assert_eq!(s.c.window(), INITIAL);
        s.round(30 * MS, false);
        assert_eq!(s.c.window(), 2 * INITIAL);
        s.round(30 * MS, false);
        assert_eq!(s.c.window(), 4 * INITIAL);
        assert_eq!(s.c.ssthresh, u64::MAX);
    }

    #[test]
    fn random_loss_at_the_minimum_round_trip_keeps_the_window_and_slow_start() {
        let mut s = Sim::new();
        let sent = s.rounds(3, 30 * MS);
        let before = s.c.window();
        s.lose(sent);
        assert_eq!(
            s.c.window(),
            before,
            "a loss without a queue cut the window"
        );
        assert_eq!(s.c.events.random, 1);
        assert_eq!(s.c.ssthresh, u64::MAX, "a random loss ended slow start");
        s.round(30 * MS, false);
        assert_eq!(s.c.window(), 2 * before);
        // Many random losses, one per round, at 1 % of the datagrams: still no cut.
        for _ in 0..5 {
            let sent = s.round(30 * MS, false);
            s.lose(sent);
        }
        assert_eq!(s.c.events.random, 6);
        assert_eq!(s.c.events.queue + s.c.events.other, 0);
    }

    #[test]
    fn loss_with_a_full_queue_backs_off_as_cubic() {
        let mut s = Sim::new();
        s.rounds(3, 30 * MS);
        // The queue fills: the round trip triples (a drop-tail queue of twice the BDP).
        let sent = s.round(90 * MS, false);
        let before = s.c.window();
        s.lose(sent);
        assert_eq!(s.c.window(), (before as f64 * BETA) as u64);
        assert_eq!(s.c.ssthresh, s.c.window(), "slow start did not end");
        assert_eq!(s.c.events.queue, 1);
        // More losses of packets sent before the cut belong to the same event.
        s.lose(sent);
        assert_eq!(s.c.window(), (before as f64 * BETA) as u64);
        assert_eq!(s.c.events.queue, 1);
    }

    #[test]
    fn loss_with_a_small_queue_cuts_only_the_queue() {
        let mut s = Sim::new();
        s.rounds(3, 30 * MS);
        // 6 ms of queue, above the 3.75 ms margin: keep (30 + 1.875) / 36 of the window.
        let sent = s.round(36 * MS, false);
        let before = s.c.window();
        s.lose(sent);
        let keep = (30.0 + 1.875) / 36.0;
        let want = (before as f64 * keep) as u64;
        assert!(
            s.c.window().abs_diff(want) <= 1,
            "window {} want {want}",
            s.c.window()
        );
        assert!(s.c.window() > (before as f64 * BETA) as u64);
        // Just under the margin is no queue.
        let mut s = Sim::new();
        s.rounds(3, 30 * MS);
        let sent = s.round(33 * MS, false);
        let before = s.c.window();
        s.lose(sent);
        assert_eq!(s.c.window(), before);
    }

    #[test]
    fn a_high_loss_rate_backs_off_without_delay() {
        // The last round (application-limited, so the window stays) acknowledged a window, the
        // one before half of one: 1.5 windows. A twentieth of a window (3 %) lost in one batch
        // at the minimum round trip is random...
        let mut s = Sim::new();
        s.rounds(3, 30 * MS);
        let sent = s.round(30 * MS, true);
        let before = s.c.window();
        s.c.congestion(s.now, sent, false, before / 20);
        assert_eq!(s.c.window(), before);
        assert_eq!(s.c.events.random, 1);
        // ... a fifth (12 %) is congestion whatever the delay.
        let mut s = Sim::new();
        s.rounds(3, 30 * MS);
        let sent = s.round(30 * MS, true);
        s.c.congestion(s.now, sent, false, before / 5);
        assert_eq!(s.c.window(), (before as f64 * BETA) as u64);
        assert_eq!(s.c.events.other, 1);
    }

    #[test]
    fn an_ecn_mark_backs_off() {
        let mut s = Sim::new();
        let sent = s.rounds(2, 30 * MS);
        let before = s.c.window();
        s.c.congestion(s.now, sent, false, 0);
        assert_eq!(s.c.window(), (before as f64 * BETA) as u64);
    }

    #[test]
    fn loss_before_any_sample_backs_off() {
        let mut s = Sim::new();
        let sent = s.now;
        s.now += 30 * MS;
        s.lose(sent);
        assert_eq!(s.c.window(), (INITIAL as f64 * BETA) as u64);
    }

    #[test]
    fn persistent_congestion_resets_to_the_minimum_window() {
        let mut s = Sim::new();
        let sent = s.rounds(3, 30 * MS);
        s.c.congestion(s.now, sent, true, 10 * u64::from(MTU));
        assert_eq!(s.c.window(), 2 * u64::from(MTU));
        assert_eq!(s.c.events.persistent, 1);
        // And it starts over in slow start.
        s.round(30 * MS, false);
        assert_eq!(s.c.window(), 4 * u64::from(MTU));
    }

    #[test]
    fn app_limited_acks_do_not_grow_the_window() {
        let mut s = Sim::new();
        s.round(30 * MS, true);
        s.round(30 * MS, true);
        assert_eq!(s.c.window(), INITIAL);
        // Nor in congestion avoidance.
        let mut s = Sim::new();
        s.rounds(2, 30 * MS);
        let sent = s.round(90 * MS, false);
        s.lose(sent);
        s.round(30 * MS, false);
        let w = s.c.window();
        assert_eq!(
            s.c.ssthresh,
            (s.c.cubic.w_max * BETA) as u64,
            "not after a cut"
        );
        s.round(30 * MS, true);
        s.round(30 * MS, true);
        assert_eq!(s.c.window(), w);
        s.round(30 * MS, false);
        assert!(s.c.window() > w);
    }

    #[test]
    fn a_path_without_a_queue_refills_the_window_fast() {
        let mut s = Sim::new();
        s.rounds(3, 30 * MS);
        let sent = s.round(90 * MS, false);
        let before = s.c.window();
        s.lose(sent);
        // Nothing queued: 1.25x a round, and back past the peak in two.
        s.round(30 * MS, false);
        assert!(s.c.refilling);
        s.round(30 * MS, false);
        assert!(
            s.c.window() > before,
            "{} after 2 rounds, peak {before}",
            s.c.window()
        );
        // A queue again: Cubic's pace (a few datagrams a round at most).
        s.round(33 * MS, false);
        let w = s.c.window();
        s.round(33 * MS, false);
        assert!(!s.c.refilling);
        assert!(
            s.c.window() < w + 10 * u64::from(MTU),
            "{w} -> {}",
            s.c.window()
        );
    }

    #[test]
    fn a_window_left_half_empty_does_not_grow() {
        let mut s = Sim::new();
        // A third of the window in flight, acknowledged as not application-limited (the pacer
        // held the rest back, say): no growth, in slow start or after.
        s.send_and_ack(INITIAL / 3, 30 * MS, false);
        assert_eq!(s.c.window(), INITIAL);
        // Half of it in flight: it grows, but only while it is at most twice what is in use.
        s.send_and_ack(INITIAL / 2, 30 * MS, false);
        assert_eq!(s.c.window(), INITIAL + u64::from(MTU));
        let mut s = Sim::new();
        s.rounds(2, 30 * MS);
        let sent = s.round(90 * MS, false);
        s.lose(sent);
        s.round(30 * MS, false);
        let w = s.c.window();
        s.send_and_ack(w / 3, 30 * MS, false);
        s.send_and_ack(w / 3, 30 * MS, false);
        assert_eq!(s.c.window(), w);
    }

    #[test]
    fn rising_delay_ends_slow_start_before_any_loss() {
        let mut s = Sim::new();
        s.rounds(2, 30 * MS);
        let at_rise = s.c.window();
        // 8 ms above the last round's 30 ms: past the 4 ms (30 / 8, at least 4) threshold.
        s.round(38 * MS, false);
        assert!(s.c.css.is_some(), "no conservative slow start");
        let after = s.c.window();
        assert!(
            after < at_rise + at_rise / 2,
            "grew {at_rise} -> {after}, as slow start"
        );
        // Five rounds of a quarter's growth, then Cubic.
        s.rounds(5, 38 * MS);
        assert!(s.c.css.is_none());
        assert!(
            s.c.ssthresh < u64::MAX && s.c.window() >= s.c.ssthresh,
            "still in slow start"
        );
        assert_eq!(s.c.events, Events::default());
    }

    #[test]
    fn a_queue_growing_within_a_round_ends_slow_start_in_that_round() {
        let mut s = Sim::new();
        s.rounds(3, 30 * MS);
        // The next round's round trips rise from 30 to 50 ms as it goes: its least is still
        // 30 ms, as the last round's, but the recent round trip shows the queue.
        let first = s.now;
        let w = s.c.window();
        let packets = w / u64::from(MTU);
        s.c.on_sent(first, w, 0);
        for i in 0..packets {
            let sent = first + 30 * MS * i as u32 / packets as u32;
            let rtt = 30 * MS + 20 * MS * i as u32 / packets as u32;
            s.c.ack(sent + rtt, sent, u64::from(MTU), false, rtt);
        }
        assert_eq!(s.c.round.min, Some(30 * MS));
        assert!(s.c.css.is_some(), "still in slow start");
        assert!(s.c.window() < 2 * w - w / 4, "{w} -> {}", s.c.window());
    }

    #[test]
    fn delay_falling_back_resumes_slow_start() {
        let mut s = Sim::new();
        s.rounds(2, 30 * MS);
        s.round(38 * MS, false);
        assert!(s.c.css.is_some());
        s.round(30 * MS, false);
        assert!(s.c.css.is_none());
        // Doubles (less the part of a datagram the round did not send).
        let before = s.c.window();
        s.round(30 * MS, false);
        assert!(s.c.window() > 2 * before - u64::from(MTU));
    }

    #[test]
    fn cubic_regrows_after_a_cut() {
        let mut s = Sim::new();
        s.rounds(3, 30 * MS);
        let sent = s.round(90 * MS, false);
        let before = s.c.window();
        s.lose(sent);
        let cut = s.c.window();
        // With a small queue (2 ms: not enough to refill fast), grows far slower than slow
        // start, back to where it was in K = cbrt(600 datagrams / C) = 11.4 s (rounds of 48 ms
        // here), most of the way in the first 9 s, then past it.
        let mut last = cut;
        let mut at = Vec::new();
        for _ in 0..400 {
            s.round(32 * MS, false);
            assert!(s.c.window() >= last);
            assert!(s.c.window() < last + last / 8, "{last} -> {}", s.c.window());
            last = s.c.window();
            at.push(last);
        }
        assert!(
            at[199] > cut + (before - cut) * 3 / 4,
            "{cut} -> {}, peak {before}",
            at[199]
        );
        assert!(at[249] < before + before / 50, "{}, peak {before}", at[249]);
        assert!(last > before, "{cut} -> {last}, peak {before}");
    }

    #[test]
    fn the_window_never_falls_below_two_datagrams() {
        let mut s = Sim::new();
        s.rounds(2, 30 * MS);
        s.round(90 * MS, false);
        for _ in 0..40 {
            s.now += MS;
            let sent = s.now;
            s.now += MS;
            s.c.congestion(s.now, sent, false, u64::from(MTU));
        }
        assert_eq!(s.c.window(), 2 * u64::from(MTU));
        s.c.on_mtu_update(9000);
        assert_eq!(s.c.window(), 18_000);
    }
}
