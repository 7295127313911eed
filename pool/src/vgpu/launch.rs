//! Launches on a virtual GPU: split over the members when the kernel is provably splittable
//! and the timing model says it pays, else whole on the home member.
//!
//! The timing model: a kernel of `n` blocks took `T` on the home member when it last ran
//! whole with the same geometry. Cut into ranges of `b_i` blocks on members of relative
//! speed `s_i`, it takes about `max_i(b_i / n * T * s_0 / s_i)` plus the bytes the members
//! lack over the measured bandwidth between members plus a round trip; it is split only when
//! that is under 0.8 T. Speeds are measured on every split launch (blocks per second of each
//! member's range), bandwidth on every copy between members.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::analysis::{plan_in, split_dim, Analysis, KernelFootprint, RangeFootprint, Region};
use remora_protocol::messages::{CtxId, ModuleId, Reply, Request};

use super::modules::guarded_id;
use super::{lost_reply, SplitPolicy, Vgpu};

/// Split only when the prediction is under this share of the whole run's time.
const PAYS: f64 = 0.8;
/// A write footprint of more rows than this is not tracked row by row: the launch runs whole.
const MAX_ROWS: u64 = 4096;

/// Same kernel, same geometry.
type Key = (ModuleId, u32, [u32; 3], [u32; 3], u32);

/// What the virtual GPU has measured.
pub struct Model {
    /// Blocks per second of each member, relative; 1.0 until measured.
    speeds: Vec<f64>,
    /// Bytes per second between members, through the pool.
    bandwidth: f64,
    round_trip: Duration,
    /// The time of the last whole run of each kernel and geometry.
    whole: HashMap<Key, Duration>,
}

impl Model {
    pub fn new(members: usize) -> Self {
        Self {
            speeds: vec![1.0; members],
            bandwidth: 200e6,
            round_trip: Duration::from_millis(1),
            whole: HashMap::new(),
        }
    }

    /// A copy between members of `bytes` took `took`.
    pub fn moved(&mut self, bytes: u64, took: Duration) {
        if bytes >= 64 << 10 && !took.is_zero() {
            let bw = bytes as f64 / took.as_secs_f64();
            self.bandwidth = 0.5 * self.bandwidth + 0.5 * bw;
        }
    }

    /// Cuts `n` blocks into contiguous ranges weighted by the members' speeds; members whose
    /// share rounds to nothing get no range. `(member, lo, hi)`.
    pub fn ranges(&self, n: u32) -> Vec<(usize, u32, u32)> {
        let total: f64 = self.speeds.iter().sum();
        let mut out = Vec::new();
        let mut lo = 0u32;
        let mut cum = 0.0;
        for (i, s) in self.speeds.iter().enumerate() {
            cum += s;
            let hi = if i + 1 == self.speeds.len() {
                n
            } else {
                ((cum / total) * f64::from(n)).round() as u32
            };
            if hi > lo {
                out.push((i, lo, hi));
                lo = hi;
            }
        }
        out
    }

    /// The predicted time of a split run, and whether it pays against `whole`.
    fn predict(
        &self,
        whole: Duration,
        n: u32,
        ranges: &[(usize, u32, u32)],
        bytes: u64,
    ) -> (Duration, bool) {
        let t = whole.as_secs_f64();
        let s0 = self.speeds[0];
        let compute = ranges
            .iter()
            .map(|&(m, lo, hi)| f64::from(hi - lo) / f64::from(n) * t * s0 / self.speeds[m])
            .fold(0.0, f64::max);
        let predicted = compute + bytes as f64 / self.bandwidth + self.round_trip.as_secs_f64();
        (Duration::from_secs_f64(predicted), predicted < PAYS * t)
    }
}

/// Every byte a footprint region covers, as (address, length) runs.
fn runs(r: &Region) -> impl Iterator<Item = (u64, u64)> + '_ {
    (0..r.rows.max(1)).map(move |i| (r.offset + i * r.pitch, r.width))
}

fn rows(fp: &RangeFootprint) -> u64 {
    fp.writes
        .iter()
        .chain(&fp.reads)
        .map(|r| r.rows.max(1))
        .sum()
}

impl Vgpu {
    pub(super) async fn launch(&mut self, req: &Request) -> Result<(), Reply> {
        let Request::Launch {
            ctx,
            module,
            kernel,
            grid,
            block,
            shared,
            ref params,
            cooperative,
            ..
        } = *req
        else {
            return Ok(());
        };
        if let Some((failed, _)) = self.failed_loads.get(&module) {
            let mut r = failed.clone();
            r.message = format!("the module's load failed: {}", r.message);
            return Err(r);
        }
        let known = self
            .modules
            .get(&module)
            .and_then(|m| m.kernels.get(kernel as usize));
        let Some(k) = known else {
            // The member refuses it with the reason.
            return self.post(0, req).await;
        };
        let name = k.name.clone();
        let guard = k.guard;
        let fp = match &k.analysis {
            Analysis::Splittable(fp) => Some(fp.clone()),
            Analysis::NotSplittable(why) => {
                let why = why.clone();
                return self.whole(req, None, &name, &why).await;
            }
        };
        let dim = split_dim(grid);
        let n = grid[dim];
        let why = if self.policy == SplitPolicy::Never {
            Some("the pool does not split launches (--split never)".to_string())
        } else if cooperative {
            Some("a cooperative launch".to_string())
        } else if self.members.len() < 2 {
            Some("one member".into())
        } else if n < 2 {
            Some("one block along the grid's slowest dimension".into())
        } else {
            None
        };
        let fp = fp.expect("splittable");
        let member_params = |lo: u32, hi: u32| with_guard(params, guard, dim as u32, lo, hi);
        if let Some(why) = why {
            return self.whole(req, Some(&fp), &name, &why).await;
        }
        let key: Key = (module, kernel, grid, block, shared);
        let always = self.policy == SplitPolicy::Always;
        let known_time = self.model.whole.get(&key).copied();
        let whole = match known_time {
            Some(t) => t,
            None if always => Duration::from_secs(1),
            None => {
                return self
                    .whole_timed(
                        req,
                        &fp,
                        key,
                        &name,
                        "its first launch at this size is timed whole",
                    )
                    .await
            }
        };
        let ranges = self.model.ranges(n);
        let spans: Vec<(u32, u32)> = ranges.iter().map(|&(_, lo, hi)| (lo, hi)).collect();
        let footprints = match self.plan(&fp, params, grid, block, &spans) {
            Ok(f) => f,
            Err(why) => return self.whole(req, Some(&fp), &name, &why).await,
        };
        if footprints.iter().any(|f| rows(f) > MAX_ROWS) {
            return self
                .whole(
                    req,
                    Some(&fp),
                    &name,
                    "its footprint has too many rows to track",
                )
                .await;
        }
        if let Some(why) = self.untracked(&footprints) {
            return self.whole(req, Some(&fp), &name, &why).await;
        }
        let bytes = self.to_move(&ranges, &footprints);
        let (predicted, pays) = self.model.predict(whole, n, &ranges, bytes);
        if !pays && !always {
            let why = format!(
                "the timing model says splitting does not pay (predicted {:.1} ms split, {:.1} ms whole)",
                predicted.as_secs_f64() * 1e3,
                whole.as_secs_f64() * 1e3
            );
            return self.whole(req, Some(&fp), &name, &why).await;
        }
        // Each member receives what its range reads, then runs its range.
        for (&(m, _, _), f) in ranges.iter().zip(&footprints) {
            for r in &f.reads {
                for (addr, len) in runs(r) {
                    self.make_valid(m, addr, len).await?;
                }
            }
            for &p in &f.unbounded_reads {
                if let Some((b, a)) = self.alloc_of(p) {
                    let size = a.valid.size();
                    self.make_valid(m, b, size).await?;
                }
            }
        }
        for &(m, lo, hi) in &ranges {
            let mut r = req.clone();
            if let Request::Launch { params, module, .. } = &mut r {
                *params = member_params(lo, hi);
                *module = guarded_id(*module);
            }
            self.post(m, &r).await?;
        }
        let took = self.synchronize(ctx, ranges.iter().map(|r| r.0)).await?;
        for ((&(m, lo, hi), f), t) in ranges.iter().zip(&footprints).zip(took) {
            for r in &f.writes {
                for (addr, len) in runs(r) {
                    self.wrote(addr, len, m);
                }
            }
            let blocks = f64::from(hi - lo);
            let t = t
                .saturating_sub(self.model.round_trip)
                .max(Duration::from_micros(1));
            let speed = blocks / t.as_secs_f64();
            // Relative to the home member's speed when the kernel ran whole.
            if known_time.is_some() {
                let home_speed = f64::from(n) / whole.as_secs_f64().max(1e-6);
                self.model.speeds[m] = 0.5 * self.model.speeds[m] + 0.5 * (speed / home_speed);
            }
            self.stats().blocks[m] += u64::from(hi - lo);
        }
        self.stats().launches_split += 1;
        self.counters
            .launches
            .get_or_create(&vec![("how", "split".into())])
            .inc();
        Ok(())
    }

    /// The footprints of `ranges`, checked to be a valid split; reads that cannot be bounded
    /// count as their whole allocation.
    fn plan(
        &self,
        fp: &KernelFootprint,
        params: &[u8],
        grid: [u32; 3],
        block: [u32; 3],
        ranges: &[(u32, u32)],
    ) -> Result<Vec<RangeFootprint>, String> {
        let allocation = |p: u64| self.alloc_of(p).map(|(b, a)| (b, a.valid.size()));
        plan_in(fp, params, grid, block, ranges, &allocation).map(|(_, f)| f)
    }

    /// Bytes the members lack of what their ranges read.
    fn to_move(&self, ranges: &[(usize, u32, u32)], footprints: &[RangeFootprint]) -> u64 {
        let mut bytes = 0;
        for (&(m, _, _), f) in ranges.iter().zip(footprints) {
            for r in &f.reads {
                for (addr, len) in runs(r) {
                    if let Some((b, a)) = self.alloc_of(addr) {
                        bytes += a
                            .valid
                            .missing(addr - b, addr - b + len, m)
                            .iter()
                            .map(|(s, e, _)| e - s)
                            .sum::<u64>();
                    }
                }
            }
            for &p in &f.unbounded_reads {
                if let Some((_, a)) = self.alloc_of(p) {
                    let size = a.valid.size();
                    bytes += a
                        .valid
                        .missing(0, size, m)
                        .iter()
                        .map(|(s, e, _)| e - s)
                        .sum::<u64>();
                }
            }
        }
        bytes
    }

    /// Why a footprint reaches outside the virtual GPU's allocations, if it does.
    fn untracked(&self, footprints: &[RangeFootprint]) -> Option<String> {
        for f in footprints {
            for r in f.reads.iter().chain(&f.writes) {
                let last = r.offset + r.pitch * r.rows.max(1).saturating_sub(1) + r.width;
                match self.alloc_of(r.offset) {
                    Some((b, a)) if last <= b + a.valid.size() => {}
                    _ => {
                        return Some(format!(
                            "its footprint at {:#x} is outside the virtual GPU's allocations",
                            r.offset
                        ))
                    }
                }
            }
            for &p in &f.unbounded_reads {
                if self.alloc_of(p).is_none() {
                    return Some(format!(
                        "it reads from {p:#x}, outside the virtual GPU's allocations"
                    ));
                }
            }
        }
        None
    }

    /// Posts `req` to member `m`.
    async fn post(&self, m: usize, req: &Request) -> Result<(), Reply> {
        self.members[m]
            .link
            .post_large(&self.for_member(m, req), &[])
            .await
            .map_err(lost_reply)
    }

    /// Waits for members `ms` to finish their work, in parallel: how long each took.
    async fn synchronize(
        &self,
        ctx: CtxId,
        ms: impl Iterator<Item = usize>,
    ) -> Result<Vec<Duration>, Reply> {
        let sync = Request::CtxSynchronize { ctx };
        let started = Instant::now();
        let waits = futures_util::future::join_all(ms.map(|m| {
            let link = &self.members[m].link;
            let sync = &sync;
            async move {
                let r = link.call(sync, &[], None).await;
                (r, started.elapsed())
            }
        }))
        .await;
        let mut took = Vec::new();
        for (r, t) in waits {
            let r = r.map_err(lost_reply)?;
            if r.status != 0 {
                return Err(r);
            }
            took.push(t);
        }
        Ok(took)
    }

    /// Runs the launch whole on the home member and times it, for the model.
    async fn whole_timed(
        &mut self,
        req: &Request,
        fp: &KernelFootprint,
        key: Key,
        name: &str,
        why: &str,
    ) -> Result<(), Reply> {
        let Request::Launch { ctx, .. } = *req else {
            return Ok(());
        };
        // What was queued before is not this kernel's time.
        self.synchronize(ctx, std::iter::once(0)).await?;
        let rt = Instant::now();
        self.synchronize(ctx, std::iter::once(0)).await?;
        self.model.round_trip = rt.elapsed();
        self.whole(req, Some(fp), name, why).await?;
        let took = self.synchronize(ctx, std::iter::once(0)).await?[0];
        let t = took
            .saturating_sub(self.model.round_trip)
            .max(Duration::from_micros(1));
        self.model.whole.insert(key, t);
        Ok(())
    }

    /// Runs the launch whole on the home member, after it gathered what the kernel may read;
    /// what it may write is then valid there only.
    async fn whole(
        &mut self,
        req: &Request,
        fp: Option<&KernelFootprint>,
        name: &str,
        why: &str,
    ) -> Result<(), Reply> {
        *self
            .stats()
            .reasons
            .entry(format!("{name}: {why}"))
            .or_default() += 1;
        self.stats().launches_whole += 1;
        self.counters
            .launches
            .get_or_create(&vec![("how", "whole".into())])
            .inc();
        let Request::Launch {
            grid,
            block,
            ref params,
            ..
        } = *req
        else {
            return Ok(());
        };
        let footprint = fp.and_then(|fp| {
            let dim = split_dim(grid);
            self.plan(fp, params, grid, block, &[(0, grid[dim])])
                .ok()
                .and_then(|mut f| f.pop())
                .filter(|f| rows(f) <= MAX_ROWS)
        });
        match &footprint {
            Some(f) => {
                for r in &f.reads {
                    for (addr, len) in runs(r) {
                        self.make_valid(0, addr, len).await?;
                    }
                }
                for &p in &f.unbounded_reads {
                    if let Some((b, a)) = self.alloc_of(p) {
                        let size = a.valid.size();
                        self.make_valid(0, b, size).await?;
                    }
                }
            }
            None => self.gather_all(0).await?,
        }
        self.post(0, req).await?;
        match footprint {
            Some(f) => {
                for r in &f.writes {
                    for (addr, len) in runs(r) {
                        self.wrote(addr, len, 0);
                    }
                }
            }
            None => self.wrote_anything(0),
        }
        Ok(())
    }
}

/// The members' parameter buffer: the client's, with the guard's three words where the
/// rewritten kernel expects them.
fn with_guard(
    params: &[u8],
    guard: Option<[remora_protocol::messages::ParamDesc; 3]>,
    dim: u32,
    lo: u32,
    hi: u32,
) -> Vec<u8> {
    let Some(g) = guard else {
        return params.to_vec();
    };
    let end = g
        .iter()
        .map(|p| (p.offset + p.size) as usize)
        .max()
        .unwrap_or(0);
    let mut out = params.to_vec();
    if out.len() < end {
        out.resize(end, 0);
    }
    for (p, v) in g.iter().zip([dim, lo, hi]) {
        let at = p.offset as usize;
        out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_speeds_and_cover_the_grid() {
        let mut m = Model::new(3);
        assert_eq!(m.ranges(9), [(0, 0, 3), (1, 3, 6), (2, 6, 9)]);
        m.speeds = vec![1.0, 3.0, 0.0001];
        assert_eq!(m.ranges(8), [(0, 0, 2), (1, 2, 8)]);
        assert_eq!(m.ranges(1), [(1, 0, 1)]);
    }

    #[test]
    fn the_model_splits_compute_and_declines_when_copies_dominate() {
        let m = Model::new(2);
        let ranges = m.ranges(64);
        let (_, pays) = m.predict(Duration::from_secs(1), 64, &ranges, 1 << 20);
        assert!(pays);
        let (_, pays) = m.predict(Duration::from_millis(10), 64, &ranges, 64 << 20);
        assert!(!pays);
    }

    #[test]
    fn guard_words_land_at_their_offsets() {
        use remora_protocol::messages::ParamDesc;
        let g = [
            ParamDesc {
                offset: 12,
                size: 4,
            },
            ParamDesc {
                offset: 16,
                size: 4,
            },
            ParamDesc {
                offset: 20,
                size: 4,
            },
        ];
        let p = with_guard(&[9; 12], Some(g), 1, 5, 7);
        assert_eq!(p.len(), 24);
        assert_eq!(&p[..12], &[9; 12]);
        assert_eq!(&p[12..], &[1, 0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(with_guard(&[1, 2], None, 0, 0, 1), [1, 2]);
    }
}
