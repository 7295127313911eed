//! What the pool counts for Prometheus (`remora serve --member ... --metrics ADDR`): sessions,
//! the queue, its members' health, and what its virtual GPUs split and moved. Calls, bytes and errors are counted by the members'
//! own metrics, where the work happens.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The label a session of the pool's own token (not one from the tokens file) carries.
pub const OWN_TOKEN: &str = "(server)";

pub struct PoolMetrics {
    registry: Registry,
    pub sessions_opened: Family<Labels, Counter>,
    pub refused: Family<Labels, Counter>,
    /// Kept by the sessions themselves (up when one begins, down when it ends).
    pub sessions_active: Family<Labels, Gauge>,
    queue: Gauge,
    member_up: Family<Labels, Gauge>,
    /// What virtual GPUs did: launches split or run whole, bytes moved between members.
    pub vgpu: crate::vgpu::Counters,
}

/// State the gauges mirror, as of a scrape.
pub struct Snapshot {
    pub queue: usize,
    /// Each member's address and state (`up`, `missing`, ...).
    pub members: Vec<(String, &'static str)>,
}

/// One session counted in `sessions_active`.
pub struct ActiveSession(Gauge);

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for PoolMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolMetrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("remora_pool"),
            sessions_opened: Family::default(),
            refused: Family::default(),
            sessions_active: Family::default(),
            queue: Gauge::default(),
            member_up: Family::default(),
            vgpu: crate::vgpu::Counters {
                launches: Family::default(),
                bytes_moved: Counter::default(),
            },
        };
        let r = &mut m.registry;
        r.register(
            "sessions_opened",
            "Sessions begun (placed or queued), by token",
            m.sessions_opened.clone(),
        );
        r.register(
            "sessions_refused",
            "Sessions refused, by reason",
            m.refused.clone(),
        );
        r.register(
            "sessions_active",
            "Sessions placed or waiting now, by token",
            m.sessions_active.clone(),
        );
        r.register("queue_length", "Sessions waiting for GPUs", m.queue.clone());
        r.register(
            "member_up",
            "1 for a member that answers, 0 for one suspected (silent, refusing or not reached yet)",
            m.member_up.clone(),
        );
        r.register(
            "vgpu_launches",
            "Launches on virtual GPUs, by how they ran (split over members, or whole on one)",
            m.vgpu.launches.clone(),
        );
        r.register(
            "vgpu_bytes_moved",
            "Bytes virtual GPUs copied between their members",
            m.vgpu.bytes_moved.clone(),
        );
        m
    }

    /// Counts a session begun, and keeps it counted as active while the guard lives.
    pub fn session(&self, token: &str) -> ActiveSession {
        let labels = vec![("token", token.to_string())];
        self.sessions_opened.get_or_create(&labels).inc();
        let gauge = self.sessions_active.get_or_create(&labels).clone();
        gauge.inc();
        ActiveSession(gauge)
    }

    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&vec![("reason", reason.into())])
            .inc();
    }

    pub fn encode(&self, now: Snapshot) -> String {
        self.queue.set(i64::try_from(now.queue).unwrap_or(i64::MAX));
        self.member_up.clear();
        for (addr, state) in &now.members {
            self.member_up
                .get_or_create(&vec![("member", addr.clone()), ("state", (*state).into())])
                .set(i64::from(*state == "up"));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
