//! What the server counts for Prometheus (`remora serve --metrics ADDR`), in the
//! `prometheus-client` model.
//!
//! Counters are bumped where things happen (connections, calls, payloads); gauges that mirror
//! state (sessions per token, memory per token, caches, devices) are set from that state when
//! scraped, so they can never drift from it. Serving the text over HTTP is the binary's job.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use remora_protocol::CuStatus;

type Labels = Vec<(&'static str, String)>;

/// The label a session of the server's own token (not one from the tokens file) carries.
pub const OWN_TOKEN: &str = "(server)";

pub struct Metrics {
    registry: Registry,
    pub sessions_opened: Family<Labels, Counter>,
    pub refused: Family<Labels, Counter>,
    pub calls: Family<Labels, Counter>,
    pub bytes: Family<Labels, Counter>,
    pub launches: Counter,
    pub kernel_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub errors: Family<Labels, Counter>,
    pub tokens_file_errors: Counter,
    tokens_in_force: Gauge,
    sessions_active: Family<Labels, Gauge>,
    token_memory: Family<Labels, Gauge>,
    token_modules: Family<Labels, Gauge>,
    module_cache: Gauge,
    device_memory: Family<Labels, Gauge>,
    draining: Gauge,
}

/// State the gauges mirror, as of a scrape.
pub struct Snapshot {
    /// Open sessions by token name.
    pub sessions: Vec<String>,
    /// (token, device memory held, module image bytes held) per person of the tokens file.
    pub tokens: Vec<(String, u64, u64)>,
    pub module_cache: u64,
    /// Memory in use per device, where the backend knows it.
    pub device_memory: Vec<Option<u64>>,
    pub draining: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("remora"),
            sessions_opened: Family::default(),
            refused: Family::default(),
            calls: Family::default(),
            bytes: Family::default(),
            launches: Counter::default(),
            kernel_seconds: Counter::default(),
            errors: Family::default(),
            tokens_file_errors: Counter::default(),
            tokens_in_force: Gauge::default(),
            sessions_active: Family::default(),
            token_memory: Family::default(),
            token_modules: Family::default(),
            module_cache: Gauge::default(),
            device_memory: Family::default(),
            draining: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "sessions_opened",
            "Sessions begun, by token",
            m.sessions_opened.clone(),
        );
        r.register(
            "sessions_refused",
            "Connections refused, by reason",
            m.refused.clone(),
        );
        r.register(
            "calls",
            "Calls executed, by call and class (async: no reply; round_trip: the client waited)",
            m.calls.clone(),
        );
        r.register(
            "payload_bytes",
            "Bulk bytes (copies, module images), by direction",
            m.bytes.clone(),
        );
        r.register("kernel_launches", "Kernels launched", m.launches.clone());
        r.register(
            "kernel_seconds",
            "Seconds the server spent in launch calls (the emulated GPU runs kernels there)",
            m.kernel_seconds.clone(),
        );
        r.register(
            "errors",
            "Calls that failed, by CUDA error code",
            m.errors.clone(),
        );
        r.register(
            "tokens_file_errors",
            "Times the tokens file was found invalid (the tokens in force stayed)",
            m.tokens_file_errors.clone(),
        );
        r.register(
            "tokens",
            "People of the tokens file whose tokens are in force",
            m.tokens_in_force.clone(),
        );
        r.register(
            "sessions_active",
            "Sessions open now, by token",
            m.sessions_active.clone(),
        );
        r.register(
            "token_memory_bytes",
            "Device memory held now, by token of the tokens file",
            m.token_memory.clone(),
        );
        r.register(
            "token_module_bytes",
            "Module image bytes held loaded now, by token of the tokens file",
            m.token_modules.clone(),
        );
        r.register(
            "module_cache_bytes",
            "Module images the server keeps by hash for every client",
            m.module_cache.clone(),
        );
        r.register(
            "device_memory_used_bytes",
            "Device memory in use, by device",
            m.device_memory.clone(),
        );
        r.register(
            "draining",
            "1 while the server drains before it stops",
            m.draining.clone(),
        );
        m
    }

    /// Counts one executed call.
    pub fn call(&self, name: &'static str, round_trip: bool) {
        let class = if round_trip { "round_trip" } else { "async" };
        self.calls
            .get_or_create(&vec![("call", name.to_string()), ("class", class.into())])
            .inc();
    }

    /// Counts one failed call.
    pub fn error(&self, status: CuStatus) {
        let code = status
            .name()
            .map_or_else(|| status.0.to_string(), str::to_string);
        self.errors.get_or_create(&vec![("code", code)]).inc();
    }

    pub fn payload(&self, to_server: bool, bytes: u64) {
        let d = if to_server { "to_server" } else { "to_client" };
        self.bytes
            .get_or_create(&vec![("direction", d.into())])
            .inc_by(bytes);
    }

    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&vec![("reason", reason.into())])
            .inc();
    }

    pub fn session_opened(&self, token: &str) {
        self.sessions_opened
            .get_or_create(&vec![("token", token.into())])
            .inc();
    }

    /// The text format, with the gauges set from `now`.
    pub fn encode(&self, now: Snapshot) -> String {
        self.sessions_active.clear();
        for t in &now.sessions {
            self.sessions_active
                .get_or_create(&vec![("token", t.clone())])
                .inc();
        }
        self.tokens_in_force
            .set(i64::try_from(now.tokens.len()).unwrap_or(i64::MAX));
        self.token_memory.clear();
        self.token_modules.clear();
        for (t, mem, modules) in &now.tokens {
            let l = vec![("token", t.clone())];
            self.token_memory.get_or_create(&l).set(clamp(*mem));
            self.token_modules.get_or_create(&l).set(clamp(*modules));
        }
        self.module_cache.set(clamp(now.module_cache));
        for (i, used) in now.device_memory.iter().enumerate() {
            let Some(used) = used else { continue };
            self.device_memory
                .get_or_create(&vec![("device", i.to_string())])
                .set(clamp(*used));
        }
        self.draining.set(i64::from(now.draining));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_come_out_in_the_text_format() {
        let m = Metrics::new();
        m.call("MemAlloc", true);
        m.call("Launch", false);
        m.error(CuStatus::OUT_OF_MEMORY);
        m.error(CuStatus(123456));
        m.payload(true, 4096);
        let text = m.encode(Snapshot {
            sessions: vec!["alice".into(), "alice".into()],
            tokens: vec![("alice".into(), 1 << 20, 10)],
            module_cache: 7,
            device_memory: vec![Some(1 << 20)],
            draining: false,
        });
        for want in [
            "remora_calls_total{call=\"MemAlloc\",class=\"round_trip\"} 1",
            "remora_calls_total{call=\"Launch\",class=\"async\"} 1",
            "remora_errors_total{code=\"CUDA_ERROR_OUT_OF_MEMORY\"} 1",
            "remora_errors_total{code=\"123456\"} 1",
            "remora_payload_bytes_total{direction=\"to_server\"} 4096",
            "remora_sessions_active{token=\"alice\"} 2",
            "remora_token_memory_bytes{token=\"alice\"} 1048576",
            "remora_module_cache_bytes 7",
            "remora_tokens 1",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        // Gauges mirror the latest state only: a session that ended is gone.
        let text = m.encode(Snapshot {
            sessions: vec![],
            tokens: vec![],
            module_cache: 0,
            device_memory: vec![None],
            draining: true,
        });
        assert!(!text.contains("sessions_active{"), "{text}");
        assert!(text.contains("remora_draining 1"), "{text}");
    }
}
