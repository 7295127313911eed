//! One virtual GPU backed by several members.
//!
//! A session that asks for `virtual_gpu: M` is placed on one GPU of each of M members and sees
//! one device. Every allocation is made at the same address on every member (the home member,
//! number 0, chooses it; the others place it there with `MemAllocFixed`), and [`coherence`]
//! records which members hold valid bytes of each. Calls that set up state (contexts, streams,
//! events, modules) go to every member; host copies go to the home member and copies to the
//! host gather from the holders; memsets run everywhere.
//!
//! Launches ([`launch`]): a kernel whose PTX the footprint analysis proves splittable is cut
//! into block ranges along the grid's slowest dimension, weighted by each member's measured
//! speed, when the timing model says it pays; each member first receives the bytes its range
//! reads and then runs the whole grid of a rewritten module whose kernels return outside the
//! range. Everything else runs whole on the home member after it gathered what it may read.
//! What was split, what was not and why, and the bytes moved between members are kept in
//! [`VgpuStats`] for `remora status`.

mod analysis;
pub mod coherence;
mod launch;
mod modules;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use remora_protocol::client::{Buffers, INLINE_PAYLOAD};
use remora_protocol::messages::{
    CtxId, DeviceInfo, ModuleId, Reply, ReplyBody, Request, ServerInfo,
};
use remora_protocol::{ConnError, CuStatus, ServerEvent};
use remora_transport::client::Link;
use remora_transport::server::{Calls, ServeError};

use crate::forward::{collect, relay, translate, Forward};
use crate::placement::Placement;
use coherence::{Members, Validity};

/// Bytes copied between members in one piece at most (bounds the pool's buffers).
const MOVE_CHUNK: u64 = 16 << 20;

/// One member of a virtual GPU.
pub struct Member {
    pub link: Link<Buffers>,
    /// The member's GPU this virtual GPU uses, as a placement of one GPU.
    pub placement: Placement,
    pub devices: u32,
}

/// When a virtual GPU splits a launch that is provably splittable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitPolicy {
    /// When the timing model says it pays.
    #[default]
    Auto,
    /// Whenever the footprints allow it (to test the split path on small kernels).
    Always,
    /// Never: every launch runs whole on the home member.
    Never,
}

impl std::str::FromStr for SplitPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => Err(format!("`{s}`: the split policy is auto, always or never")),
        }
    }
}

/// The pool's counters of what its virtual GPUs did (all sessions together).
#[derive(Clone)]
pub struct Counters {
    /// Launches by how they ran (`split` or `whole`).
    pub launches: prometheus_client::metrics::family::Family<
        Vec<(&'static str, String)>,
        prometheus_client::metrics::counter::Counter,
    >,
    pub bytes_moved: prometheus_client::metrics::counter::Counter,
}

/// What `remora status` shows of one virtual GPU.
#[derive(Debug, Default, Clone)]
pub struct VgpuStats {
    pub members: Vec<String>,
    pub launches_split: u64,
    pub launches_whole: u64,
    /// Why launches ran whole, with how many did.
    pub reasons: BTreeMap<String, u64>,
    pub bytes_moved: u64,
    /// Each member's share of the blocks of split launches.
    pub blocks: Vec<u64>,
}

impl VgpuStats {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "members": self.members,
            "launches_split": self.launches_split,
            "launches_whole": self.launches_whole,
            "not_split_because": self.reasons,
            "bytes_moved": self.bytes_moved,
            "blocks_per_member": self.blocks,
        })
    }
}

/// What the client of a virtual GPU sees: one device, the home member's, with the memory of
/// the smallest member (every allocation is made on all of them) and no lease (allocations
/// are placed by the home member, then at the same address on the others).
pub fn info(pool: &str, members: &[Member]) -> ServerInfo {
    fn device(m: &Member) -> Option<&DeviceInfo> {
        m.placement
            .gpus
            .first()
            .and_then(|&g| m.link.info.devices.get(g as usize))
    }
    let mut devices: Vec<DeviceInfo> = members
        .first()
        .and_then(device)
        .cloned()
        .into_iter()
        .collect();
    let smallest = members
        .iter()
        .filter_map(device)
        .map(|d| d.total_mem)
        .min()
        .unwrap_or(0);
    let names: Vec<String> = members
        .iter()
        .map(|m| m.link.info.server_name.clone())
        .collect();
    if let Some(d) = devices.first_mut() {
        d.total_mem = smallest;
        d.name = format!("Remora virtual GPU ({} x {})", members.len(), d.name);
    }
    ServerInfo {
        driver_version: members
            .iter()
            .map(|m| m.link.info.driver_version)
            .min()
            .unwrap_or(0),
        server_name: format!("{pool} (pool) virtual GPU on {}", names.join(", ")),
        devices,
        lease: 0,
    }
}

/// An allocation of the virtual GPU.
struct Alloc {
    ctx: CtxId,
    valid: Validity,
}

/// A session's virtual GPU.
pub struct Vgpu {
    members: Vec<Member>,
    allocs: BTreeMap<u64, Alloc>,
    modules: HashMap<ModuleId, modules::Module>,
    model: launch::Model,
    stats: Arc<Mutex<VgpuStats>>,
    policy: SplitPolicy,
    counters: Counters,
    images: modules::Images,
    /// Posted module loads that failed: their error reply, which every launch of the module
    /// reports, and whether the members saw the load (so must see its unload).
    failed_loads: HashMap<ModuleId, (Reply, bool)>,
    /// The first error of a call the client did not wait for, told at its next call that
    /// waits (as CUDA reports asynchronous errors).
    deferred: Option<Reply>,
}

impl Vgpu {
    pub fn new(
        members: Vec<Member>,
        stats: Arc<Mutex<VgpuStats>>,
        policy: SplitPolicy,
        counters: Counters,
    ) -> Self {
        let n = members.len();
        {
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            s.members = members.iter().map(|m| m.link.address.to_string()).collect();
            s.blocks = vec![0; n];
        }
        Self {
            members,
            allocs: BTreeMap::new(),
            modules: HashMap::new(),
            model: launch::Model::new(n),
            stats,
            policy,
            counters,
            images: modules::Images::default(),
            failed_loads: HashMap::new(),
            deferred: None,
        }
    }

    /// Closes every member's link: each frees what the session held there.
    pub fn close(&self, reason: &str) {
        for m in &self.members {
            m.link.close(reason);
        }
    }

    fn everyone(&self) -> Members {
        if self.members.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << self.members.len()) - 1
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, VgpuStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `req` as member `i` must see it (its device numbers).
    fn for_member(&self, i: usize, req: &Request) -> Request {
        let m = &self.members[i];
        let mut r = req.clone();
        translate(&mut r, &m.placement, m.devices);
        r
    }

    /// Sends `req` to every member; with a reply, waits for all and answers with the first
    /// failure, else the home member's reply.
    async fn broadcast(
        &self,
        req: &Request,
        wants_reply: bool,
    ) -> Result<Option<Reply>, ConnError> {
        if !wants_reply {
            for i in 0..self.members.len() {
                self.members[i]
                    .link
                    .post_large(&self.for_member(i, req), &[])
                    .await?;
            }
            return Ok(None);
        }
        let reqs: Vec<Request> = (0..self.members.len())
            .map(|i| self.for_member(i, req))
            .collect();
        let replies = futures_util::future::join_all(
            self.members
                .iter()
                .zip(&reqs)
                .map(|(m, r)| m.link.call(r, &[], None)),
        )
        .await;
        let mut first = None;
        for r in replies {
            let r = r?;
            if r.status != 0 {
                return Ok(Some(r));
            }
            first.get_or_insert(r);
        }
        Ok(first)
    }

    /// Reads `[src, src + size)` from member `i` (one round trip).
    async fn read_from(&self, i: usize, src: u64, size: u64) -> Result<Vec<u8>, Reply> {
        let id = self.read_id();
        let req = Request::MemcpyDtoH {
            ctx: self.any_ctx(src),
            stream: remora_protocol::messages::StreamId::DEFAULT,
            src,
            size,
        };
        let link = &self.members[i].link;
        let reply = link
            .call(&req, &[], Some((id, size)))
            .await
            .map_err(lost_reply)?;
        let data = link.with_sink(|b| b.0.remove(&id)).unwrap_or_default();
        if reply.status != 0 {
            return Err(reply);
        }
        if data.len() as u64 != size {
            return Err(Reply::error(
                CuStatus::UNKNOWN,
                format!("member {i} sent {} bytes of {size}", data.len()),
            ));
        }
        Ok(data)
    }

    fn read_id(&self) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The context that owns the allocation holding `addr` (copies between members name it).
    fn any_ctx(&self, addr: u64) -> CtxId {
        self.alloc_of(addr).map(|(_, a)| a.ctx).unwrap_or(CtxId(0))
    }

    fn alloc_of(&self, addr: u64) -> Option<(u64, &Alloc)> {
        let (&base, a) = self.allocs.range(..=addr).next_back()?;
        (addr < base + a.valid.size()).then_some((base, a))
    }

    /// Makes `[addr, addr + len)` valid on member `to`, copying what it lacks from holders.
    /// Bytes outside the virtual GPU's allocations are left alone (they live on the home
    /// member only).
    async fn make_valid(&mut self, to: usize, addr: u64, len: u64) -> Result<(), Reply> {
        let Some((base, a)) = self.alloc_of(addr) else {
            return Ok(());
        };
        let lo = addr - base;
        let hi = (lo + len).min(a.valid.size());
        let missing = a.valid.missing(lo, hi, to);
        for (s, e, from) in missing {
            let mut off = s;
            while off < e {
                let n = (e - off).min(MOVE_CHUNK);
                self.transfer(from, to, base + off, n).await?;
                off += n;
            }
            if let Some(a) = self.allocs.get_mut(&base) {
                a.valid.copied_to(s, e, to);
            }
        }
        Ok(())
    }

    /// Copies bytes from member `from` to member `to` through the pool.
    async fn transfer(&mut self, from: usize, to: usize, addr: u64, len: u64) -> Result<(), Reply> {
        let started = Instant::now();
        let data = self.read_from(from, addr, len).await?;
        let req = Request::MemcpyHtoD {
            ctx: self.any_ctx(addr),
            stream: remora_protocol::messages::StreamId::DEFAULT,
            dst: addr,
        };
        self.members[to]
            .link
            .post_large(&req, &data)
            .await
            .map_err(lost_reply)?;
        self.model.moved(len, started.elapsed());
        self.stats().bytes_moved += len;
        self.counters.bytes_moved.inc_by(len);
        Ok(())
    }

    /// Makes every allocation valid on member `to`: before a kernel whose reads are unknown.
    async fn gather_all(&mut self, to: usize) -> Result<(), Reply> {
        let all: Vec<(u64, u64)> = self
            .allocs
            .iter()
            .map(|(&b, a)| (b, a.valid.size()))
            .collect();
        for (b, size) in all {
            self.make_valid(to, b, size).await?;
        }
        Ok(())
    }

    /// `[addr, addr + len)` was written on member `by` only.
    fn wrote(&mut self, addr: u64, len: u64, by: usize) {
        self.held_by(addr, len, 1 << by);
    }

    /// `[addr, addr + len)` is valid on `set` only, in every allocation it reaches.
    fn held_by(&mut self, addr: u64, len: u64, set: Members) {
        let end = addr.saturating_add(len);
        for (&b, a) in self.allocs.range_mut(..end).rev() {
            if b + a.valid.size() <= addr {
                break;
            }
            a.valid.wrote_on(addr.saturating_sub(b), end - b, set);
        }
    }

    /// Every allocation may have been written by member `by` (a kernel whose writes are
    /// unknown ran there).
    fn wrote_anything(&mut self, by: usize) {
        for a in self.allocs.values_mut() {
            let size = a.valid.size();
            a.valid.wrote(0, size, by);
        }
    }

    async fn mem_alloc(
        &mut self,
        ctx: CtxId,
        size: u64,
        req: &Request,
    ) -> Result<Reply, ConnError> {
        let reply = self.members[0]
            .link
            .call(&self.for_member(0, req), &[], None)
            .await?;
        let ReplyBody::Ptr { ptr } = reply.body else {
            return Ok(reply);
        };
        let fixed = Request::MemAllocFixed { ctx, ptr, size };
        let others = futures_util::future::join_all(
            self.members[1..]
                .iter()
                .map(|m| m.link.call(&fixed, &[], None)),
        )
        .await;
        let mut failed = None;
        for (i, r) in others.into_iter().enumerate() {
            let r = r?;
            if r.status != 0 && failed.is_none() {
                failed = Some((i + 1, r));
            }
        }
        if let Some((i, r)) = failed {
            // Undo everywhere: the client sees one failed allocation.
            let free = Request::MemFree { ctx, ptr };
            for m in &self.members {
                m.link.post_large(&free, &[]).await?;
            }
            return Ok(Reply {
                message: format!(
                    "member {} of the virtual GPU could not place the allocation: {}",
                    self.members[i].link.address, r.message
                ),
                ..r
            });
        }
        let everyone = self.everyone();
        self.allocs.insert(
            ptr,
            Alloc {
                ctx,
                valid: Validity::new(size, everyone),
            },
        );
        Ok(reply)
    }

    async fn dtoh(
        &mut self,
        req: &Request,
        src: u64,
        size: u64,
    ) -> Result<(Reply, Vec<u8>), ConnError> {
        let pieces: Vec<(u64, u64, usize)> = match self.alloc_of(src) {
            Some((base, a)) if src + size <= base + a.valid.size() => a
                .valid
                .holders(src - base, src - base + size)
                .into_iter()
                .map(|(s, e, set)| (base + s, e - s, coherence::first(set)))
                .collect(),
            _ => vec![(src, size, 0)],
        };
        if pieces.iter().all(|p| p.2 == 0) {
            let id = self.read_id();
            let link = &self.members[0].link;
            let reply = link
                .call(&self.for_member(0, req), &[], Some((id, size)))
                .await?;
            let data = link.with_sink(|b| b.0.remove(&id)).unwrap_or_default();
            return Ok((reply, data));
        }
        // Pieces from several members, read in parallel.
        let reads = futures_util::future::join_all(
            pieces
                .iter()
                .map(|&(addr, len, from)| self.read_from(from, addr, len)),
        )
        .await;
        let mut out = Vec::with_capacity(size as usize);
        for r in reads {
            match r {
                Ok(d) => out.extend_from_slice(&d),
                Err(reply) => {
                    if reply.status == CuStatus::DEVICE_UNAVAILABLE.0 {
                        return Err(ConnError::Lost(reply.message));
                    }
                    return Ok((reply, Vec::new()));
                }
            }
        }
        Ok((Reply::ok(ReplyBody::Data), out))
    }

    /// A device-to-device copy, done piece by piece where the source bytes are valid.
    async fn dtod(&mut self, req: &Request, dst: u64, src: u64, size: u64) -> Result<(), Reply> {
        let inside = |a: Option<(u64, &Alloc)>, p: u64| {
            a.is_some_and(|(b, a)| p + size <= b + a.valid.size())
        };
        let tracked = inside(self.alloc_of(src), src) && inside(self.alloc_of(dst), dst);
        if !tracked {
            self.make_valid(0, src, size).await?;
            self.members[0]
                .link
                .post_large(&self.for_member(0, req), &[])
                .await
                .map_err(lost_reply)?;
            self.wrote(dst, size, 0);
            return Ok(());
        }
        let (base, a) = self.alloc_of(src).expect("checked above");
        let pieces = a.valid.holders(src - base, src - base + size);
        for (s, e, set) in pieces {
            let by = coherence::first(set);
            let off = base + s - src;
            let (ctx, stream) = match req {
                Request::MemcpyDtoD { ctx, stream, .. } => (*ctx, *stream),
                _ => (CtxId(0), remora_protocol::messages::StreamId::DEFAULT),
            };
            let piece = Request::MemcpyDtoD {
                ctx,
                stream,
                dst: dst + off,
                src: src + off,
                size: e - s,
            };
            self.members[by]
                .link
                .post_large(&piece, &[])
                .await
                .map_err(lost_reply)?;
            self.wrote(dst + off, e - s, by);
        }
        Ok(())
    }

    /// A memset runs on every member: the bytes are then valid everywhere.
    async fn memset(&mut self, req: &Request) -> Result<(), ConnError> {
        self.broadcast(req, false).await?;
        if let Request::Memset {
            dst,
            pitch,
            elem,
            width,
            height,
            ..
        } = *req
        {
            let everyone = self.everyone();
            let row = width * u64::from(elem);
            let rows = if pitch == row { 1 } else { height };
            let row = if pitch == row { row * height } else { row };
            for r in 0..rows {
                self.held_by(dst + r * pitch, row, everyone);
            }
        }
        Ok(())
    }
}

fn lost_reply(e: ConnError) -> Reply {
    let ConnError::Lost(why) = e;
    Reply::error(
        CuStatus::DEVICE_UNAVAILABLE,
        format!("the pool lost a member of this virtual GPU: {why}"),
    )
}

/// A reply that says a member was lost ends the session after the client heard it.
fn is_lost(r: &Reply) -> bool {
    r.status == CuStatus::DEVICE_UNAVAILABLE.0 && r.message.starts_with("the pool lost")
}

/// Serves a virtual GPU session until the client leaves or a member is lost.
pub(crate) async fn serve(
    mut calls: Calls,
    vgpu: &mut Vgpu,
    mut stop: impl std::future::Future<Output = ServeError> + Unpin,
) -> Result<(), Forward> {
    loop {
        let next = tokio::select! {
            ev = calls.next() => ev?,
            e = &mut stop => return Err(e.into()),
        };
        let Some(ev) = next else { break };
        let ServerEvent::Call {
            req,
            wants_reply,
            payload_len,
        } = ev
        else {
            return Err(ServeError::Refused("payload without a call".into()).into());
        };
        let mut payload = Vec::new();
        if let Request::MemcpyHtoD { .. } = req {
            if payload_len > INLINE_PAYLOAD as u64 {
                // Streamed to the home member piece by piece, never held whole.
                if let Request::MemcpyHtoD { dst, .. } = req {
                    vgpu.wrote(dst, payload_len, 0);
                }
                let home = &vgpu.members[0].link;
                let req = vgpu.for_member(0, &req);
                if let Some(t) = relay(&mut calls, home, &req, payload_len, wants_reply).await? {
                    let r = home.wait(t).await?;
                    calls.reply(&r, 0);
                    calls.flush().await?;
                }
                continue;
            }
        }
        collect(&mut calls, payload_len, &mut payload).await?;
        let (reply, data) = match vgpu.handle(&req, &payload, wants_reply).await {
            Ok(r) => r,
            Err(e) => {
                let r = lost_reply(e);
                calls.reply(&r, 0);
                let _ = calls.flush().await;
                return Err(Forward::Member(ConnError::Lost(r.message)));
            }
        };
        let lost = reply.as_ref().is_some_and(is_lost);
        // A posted module load's reply carries its own outcome only.
        let posted = matches!(
            req,
            Request::ModuleLoad {
                kernels: Some(_),
                ..
            }
        );
        let reply = match reply {
            Some(r) if !wants_reply => {
                if r.status != 0 && vgpu.deferred.is_none() {
                    vgpu.deferred = Some(r);
                }
                None
            }
            Some(r) if r.status == 0 && !posted => Some(vgpu.deferred.take().unwrap_or(r)),
            other => other,
        };
        if let Some(reply) = reply.filter(|_| wants_reply) {
            let n = if reply.status == 0 { data.len() } else { 0 };
            calls.reply(&reply, n as u64);
            calls.reply_data().extend_from_slice(&data[..n]);
            calls.flush().await?;
        }
        if lost {
            return Err(Forward::Member(ConnError::Lost(
                "a member of the virtual GPU was lost".into(),
            )));
        }
    }
    Ok(())
}

impl Vgpu {
    /// One call: its reply (when the call has one) and the data the reply carries.
    async fn handle(
        &mut self,
        req: &Request,
        payload: &[u8],
        wants_reply: bool,
    ) -> Result<(Option<Reply>, Vec<u8>), ConnError> {
        let done = |r: Result<(), Reply>| match r {
            Ok(()) => Ok((Some(Reply::ok(ReplyBody::None)), Vec::new())),
            Err(r) if is_lost(&r) => Err(ConnError::Lost(r.message)),
            Err(r) => Ok((Some(r), Vec::new())),
        };
        match *req {
            Request::MemAlloc { ctx, size } => {
                Ok((Some(self.mem_alloc(ctx, size, req).await?), Vec::new()))
            }
            Request::MemAllocAt { ctx, ptr, size } => {
                let r = self.broadcast(req, wants_reply).await?;
                if r.as_ref().is_none_or(|r| r.status == 0) {
                    let everyone = self.everyone();
                    self.allocs.insert(
                        ptr,
                        Alloc {
                            ctx,
                            valid: Validity::new(size, everyone),
                        },
                    );
                }
                Ok((r, Vec::new()))
            }
            Request::MemFree { ptr, .. } => {
                let r = self.broadcast(req, wants_reply).await?;
                if r.as_ref().is_none_or(|r| r.status == 0) {
                    self.allocs.remove(&ptr);
                }
                Ok((r, Vec::new()))
            }
            Request::CtxReset { ctx } | Request::CtxDestroy { ctx } => {
                let r = self.broadcast(req, wants_reply).await?;
                if matches!(req, Request::CtxReset { .. }) {
                    self.allocs.retain(|_, a| a.ctx != ctx);
                }
                Ok((r, Vec::new()))
            }
            Request::MemcpyHtoD { dst, .. } => {
                let home = &self.members[0].link;
                let r = if wants_reply {
                    Some(home.call(&self.for_member(0, req), payload, None).await?)
                } else {
                    home.post_large(&self.for_member(0, req), payload).await?;
                    None
                };
                self.wrote(dst, payload.len() as u64, 0);
                Ok((r, Vec::new()))
            }
            Request::MemcpyDtoH { src, size, .. } => {
                let (r, data) = self.dtoh(req, src, size).await?;
                Ok((Some(r), data))
            }
            Request::MemcpyDtoD { dst, src, size, .. } => {
                done(self.dtod(req, dst, src, size).await)
            }
            Request::Memset { .. } => {
                self.memset(req).await?;
                Ok((Some(Reply::ok(ReplyBody::None)), Vec::new()))
            }
            Request::MemGetInfo { .. } | Request::EventElapsed { .. } | Request::Status => {
                let r = self.members[0]
                    .link
                    .call(&self.for_member(0, req), payload, None)
                    .await?;
                Ok((Some(r), Vec::new()))
            }
            Request::ModuleHave { .. } => {
                // Members get a rewritten image, so the client always sends its own.
                Ok((
                    Some(Reply::ok(ReplyBody::Have { present: false })),
                    Vec::new(),
                ))
            }
            Request::ModuleLoad {
                ctx,
                module,
                hash,
                ref kernels,
            } => {
                // A client sends an image it already sent in this session by its hash alone.
                let (reply, members_saw) = match self.images.image(hash, payload) {
                    Some(image) => (
                        self.load_module(ctx, module, &image, kernels.as_deref())
                            .await?,
                        true,
                    ),
                    None => (
                        Reply::error(
                            CuStatus::INVALID_VALUE,
                            "module image is not cached on the server; send it",
                        ),
                        false,
                    ),
                };
                if kernels.is_some() && reply.status != 0 {
                    // Bounded as a server bounds them: forgotten, a launch still fails.
                    if self.failed_loads.len() >= 4096 {
                        self.failed_loads.clear();
                    }
                    self.failed_loads
                        .insert(module, (reply.clone(), members_saw));
                }
                Ok((Some(reply), Vec::new()))
            }
            Request::ModuleUnload { ctx, module } => {
                // The members of a failed posted load hold what its load left them (the image,
                // or what failed there), unless it never reached them.
                if let Some((_, false)) = self.failed_loads.remove(&module) {
                    return Ok((wants_reply.then(|| Reply::ok(ReplyBody::None)), Vec::new()));
                }
                if self.modules.remove(&module).is_some_and(|m| m.twin) {
                    let twin = Request::ModuleUnload {
                        ctx,
                        module: modules::guarded_id(module),
                    };
                    self.broadcast(&twin, false).await?;
                }
                Ok((self.broadcast(req, wants_reply).await?, Vec::new()))
            }
            Request::Launch { .. } => done(self.launch(req).await),
            Request::IpcExport { .. } | Request::IpcOpen { .. } | Request::IpcClose { .. } => Ok((
                Some(Reply::error(
                    CuStatus::NOT_SUPPORTED,
                    "CUDA IPC is not available on a virtual GPU: its memory lives on several \
                     machines",
                )),
                Vec::new(),
            )),
            Request::MemAllocFixed { .. } => Ok((
                Some(Reply::error(
                    CuStatus::NOT_PERMITTED,
                    "MemAllocFixed is the pool's own call to its members",
                )),
                Vec::new(),
            )),
            _ => Ok((self.broadcast(req, wants_reply).await?, Vec::new())),
        }
    }
}
