//! The client's end of the call pipeline, sans-IO: requests in, bytes out; bytes in, replies
//! and data out.
//!
//! Calls come in two classes here (local calls never reach the wire):
//! - *asynchronous* ones ([`ClientConn::post`], [`ClientConn::post_read`],
//!   [`ClientConn::post_call`]) are appended to a batch and cost a memcpy; the batch is written
//!   when a synchronising call needs the wire or when it grows large. Their errors come back
//!   with the next synchronising call's reply, as a real GPU's asynchronous errors do. A
//!   *posted call* ([`ClientConn::post_call`]) also keeps its reply for whoever asks for it
//!   later by its ticket (a module load: the client goes on with what it read of the image,
//!   and only a call that needs what the server alone knows waits for the reply);
//! - *synchronising* ones ([`ClientConn::call`]) want a reply now: everything queued before
//!   them goes out with them.
//!
//! Replies arrive in the order their requests were sent. Each is numbered by a [`Ticket`]; the
//! receive side matches them to what was asked, writes the data of device-to-host copies to
//! their destinations through a [`Sink`] (the destination is an opaque `u64` here: an address
//! for the shim, an offset for other users), folds the errors of asynchronous copies into the
//! next synchronising reply, and keeps each synchronising call's reply until its caller takes
//! it, so several threads may have calls in flight at once.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

use crate::frame::{self, FrameDecoder, FrameEvent, FLAG_REPLY};
use crate::messages::{decode, encode, Reply, ReplyKind, Request};

/// Payloads up to this size are copied into the batch; larger ones are written by the caller
/// straight after it, from its own memory.
pub const INLINE_PAYLOAD: usize = 64 << 10;
/// A batch this large is written even before a synchronising call.
pub const BATCH_FLUSH: usize = 256 << 10;

/// The number of a reply, in the order requests were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// What the caller must do after queuing a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Flush {
    /// Nothing yet: the call waits in the batch.
    Later,
    /// Transmit the batch now.
    Now,
    /// Transmit the batch now, then the call's payload from the caller's memory, before any
    /// other bytes.
    NowThenPayload,
}

/// Where the data of device-to-host copies goes.
pub trait Sink {
    /// Writes `bytes` at `offset` of the destination `dst` named when the read was queued.
    fn write(&mut self, dst: u64, offset: u64, bytes: &[u8]);
}

/// A sink that keeps each destination's data in a buffer of its own, for users whose
/// destinations are names rather than addresses (a pool's links to its members, tests).
#[derive(Debug, Default)]
pub struct Buffers(pub HashMap<u64, Vec<u8>>);

impl Sink for Buffers {
    fn write(&mut self, dst: u64, offset: u64, bytes: &[u8]) {
        let buf = self.0.entry(dst).or_default();
        let end = offset as usize + bytes.len();
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[offset as usize..end].copy_from_slice(bytes);
    }
}

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The connection is gone (or the peer broke the protocol); every later call fails so.
    #[error("{0}")]
    Lost(String),
}

/// A reply the client still owes its callers a place for.
#[derive(Debug, Clone, Copy)]
struct Owed {
    ticket: Ticket,
    /// Where the reply's data goes, and how many bytes it must be (0: none expected).
    dst: u64,
    len: u64,
    /// An asynchronous call's reply: its error is deferred to the next synchronising reply.
    asynchronous: bool,
    /// A posted call's reply, kept until its ticket is taken (or forgotten).
    keep: bool,
    /// The request's name, for the counters.
    name: &'static str,
    /// The number of frames queued when this one was.
    seq: u64,
    /// The body a successful reply must carry.
    expects: ReplyKind,
}

/// A reply being received.
#[derive(Debug)]
struct Receiving {
    owed: Owed,
    reply: Reply,
    offset: u64,
}

/// Counters for `REMORA_STATS` and the benchmarks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Asynchronous calls queued, by request name.
    pub posted: BTreeMap<&'static str, u64>,
    /// Round trips (synchronising calls sent), by request name.
    pub round_trips: BTreeMap<&'static str, u64>,
    /// Synchronising calls answered without asking, by request name.
    pub local: BTreeMap<&'static str, u64>,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

impl Stats {
    pub fn total(map: &BTreeMap<&'static str, u64>) -> u64 {
        map.values().sum()
    }
}

/// The client's end of one connection's call pipeline.
#[derive(Debug, Default)]
pub struct ClientConn {
    batch: Vec<u8>,
    next_ticket: u64,
    owed: VecDeque<Owed>,
    decoder: FrameDecoder,
    receiving: Option<Receiving>,
    /// Replies of synchronising calls and posted calls, until their callers take them.
    done: HashMap<Ticket, Reply>,
    /// The first failure of an asynchronous call, reported with the next synchronising reply.
    deferred: Option<Reply>,
    /// The posted call whose failure `deferred` is: taking its reply reports it.
    deferred_from: Option<Ticket>,
    /// Kernel output that arrived with asynchronous replies, delivered with the next one taken.
    output: String,
    lost: Option<String>,
    stats: Stats,
    /// Frames queued so far.
    seq: u64,
    /// The last reply said the session was idle and nothing was queued after its call.
    settled: bool,
    /// The last synchronising reply carried an error (perhaps a sticky one that every later
    /// call must report): nothing is to be answered or placed locally until one succeeds.
    failed: bool,
}

impl ClientConn {
    pub fn new() -> Self {
        Self {
            batch: Vec::with_capacity(BATCH_FLUSH * 2),
            ..Self::default()
        }
    }

    /// Takes over bytes that arrived with the handshake.
    pub fn with_received(rest: Vec<u8>) -> Self {
        let mut c = Self::new();
        c.decoder.feed(Bytes::from(rest));
        c
    }

    fn alive(&self) -> Result<(), ConnError> {
        match &self.lost {
            Some(why) => Err(ConnError::Lost(why.clone())),
            None => Ok(()),
        }
    }

    fn queue(&mut self, req: &Request, flags: u32, payload: &[u8]) -> bool {
        self.seq += 1;
        self.settled = false;
        let header = encode(req);
        frame::encode_prefixed(&mut self.batch, &header, flags, payload.len() as u64);
        let inline = payload.len() <= INLINE_PAYLOAD;
        if inline {
            self.batch.extend_from_slice(payload);
        }
        self.stats.bytes_out += (frame::PREFIX_LEN + header.len() + payload.len()) as u64;
        inline
    }

    fn owe(&mut self, dst: u64, len: u64, asynchronous: bool, req: &Request) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.owed.push_back(Owed {
            ticket,
            dst,
            len,
            asynchronous,
            keep: false,
            name: req.name(),
            seq: self.seq,
            expects: req.reply_kind(),
        });
        ticket
    }

    /// Queues a call that wants no reply. A small payload is captured into the batch; a large
    /// one must be written by the caller right after the batch ([`Flush::NowThenPayload`]).
    pub fn post(&mut self, req: &Request, payload: &[u8]) -> Result<Flush, ConnError> {
        self.alive()?;
        *self.stats.posted.entry(req.name()).or_default() += 1;
        Ok(if !self.queue(req, 0, payload) {
            Flush::NowThenPayload
        } else if self.batch.len() >= BATCH_FLUSH {
            Flush::Now
        } else {
            Flush::Later
        })
    }

    /// Queues a call whose `payload_len` bytes of payload the caller streams itself, right
    /// after the batch and before anything else (bytes relayed from elsewhere, never held
    /// whole). With `wants_reply` it is a synchronising call and its ticket is returned.
    pub fn queue_streamed(
        &mut self,
        req: &Request,
        payload_len: u64,
        wants_reply: bool,
    ) -> Result<Option<Ticket>, ConnError> {
        self.alive()?;
        self.seq += 1;
        self.settled = false;
        let header = encode(req);
        let flags = if wants_reply { FLAG_REPLY } else { 0 };
        frame::encode_prefixed(&mut self.batch, &header, flags, payload_len);
        self.stats.bytes_out += (frame::PREFIX_LEN + header.len()) as u64 + payload_len;
        if !wants_reply {
            *self.stats.posted.entry(req.name()).or_default() += 1;
            return Ok(None);
        }
        *self.stats.round_trips.entry(req.name()).or_default() += 1;
        Ok(Some(self.owe(0, 0, false, req)))
    }

    /// Queues an asynchronous device-to-host copy: its reply carries `len` bytes for `dst`,
    /// delivered whenever replies are next read; its error, if any, is reported by the next
    /// synchronising call.
    pub fn post_read(&mut self, req: &Request, dst: u64, len: u64) -> Result<Ticket, ConnError> {
        self.alive()?;
        *self.stats.posted.entry(req.name()).or_default() += 1;
        self.queue(req, FLAG_REPLY, &[]);
        Ok(self.owe(dst, len, true, req))
    }

    /// Queues a *posted call*: a call whose reply (without data) the caller does not wait for
    /// now. Its error, if any, is reported by the next synchronising call, as an asynchronous
    /// call's is; the reply itself is kept until [`ClientConn::take_reply`] takes it by the
    /// ticket returned (or [`ClientConn::forget`] drops it). A payload larger than
    /// [`INLINE_PAYLOAD`] must be written by the caller right after the batch
    /// ([`Flush::NowThenPayload`]).
    pub fn post_call(
        &mut self,
        req: &Request,
        payload: &[u8],
    ) -> Result<(Ticket, Flush), ConnError> {
        self.alive()?;
        *self.stats.posted.entry(req.name()).or_default() += 1;
        let inline = self.queue(req, FLAG_REPLY, payload);
        let t = self.owe(0, 0, true, req);
        if let Some(o) = self.owed.back_mut() {
            o.keep = true;
        }
        let flush = if !inline {
            Flush::NowThenPayload
        } else if self.batch.len() >= BATCH_FLUSH {
            Flush::Now
        } else {
            Flush::Later
        };
        Ok((t, flush))
    }

    /// Drops a posted call's reply, now or when it arrives: nobody will take it.
    pub fn forget(&mut self, ticket: Ticket) {
        if self.done.remove(&ticket).is_some() {
            return;
        }
        let owed = self
            .owed
            .iter_mut()
            .chain(self.receiving.as_mut().map(|r| &mut r.owed))
            .find(|o| o.ticket == ticket);
        if let Some(o) = owed {
            o.keep = false;
        }
    }

    /// Counts a wait for a posted call's reply that has not arrived yet as a round trip of its
    /// request (for [`Stats`]): the caller is about to wait for the server after all.
    pub fn waiting_for(&mut self, ticket: Ticket) {
        if self.done.contains_key(&ticket) || self.lost.is_some() {
            return;
        }
        let owed = self
            .owed
            .iter()
            .chain(self.receiving.as_ref().map(|r| &r.owed))
            .find(|o| o.ticket == ticket && o.keep);
        if let Some(o) = owed {
            *self.stats.round_trips.entry(o.name).or_default() += 1;
        }
    }

    /// Queues a synchronising call; the batch must be transmitted now. If `read` names a
    /// destination and a length, the reply's data goes there.
    pub fn call(
        &mut self,
        req: &Request,
        payload: &[u8],
        read: Option<(u64, u64)>,
    ) -> Result<(Ticket, Flush), ConnError> {
        self.alive()?;
        *self.stats.round_trips.entry(req.name()).or_default() += 1;
        let inline = self.queue(req, FLAG_REPLY, payload);
        let (dst, len) = read.unwrap_or((0, 0));
        let t = self.owe(dst, len, false, req);
        Ok((
            t,
            if inline {
                Flush::Now
            } else {
                Flush::NowThenPayload
            },
        ))
    }

    /// The answer to a call that only waits for queued work ([`Request::waits_only`]) when
    /// there is none: the last reply said the session was idle, nothing was queued since, and
    /// nothing (an error, kernel output) is owed to the caller. `None`: ask the server.
    pub fn answer_locally(&mut self, req: &Request) -> Option<Reply> {
        let quiet = self.settled
            && self.lost.is_none()
            && self.deferred.is_none()
            && self.output.is_empty()
            && self.owed.is_empty()
            && self.batch.is_empty();
        if !(quiet && req.waits_only()) {
            return None;
        }
        *self.stats.local.entry(req.name()).or_default() += 1;
        Some(Reply {
            idle: true,
            ..Reply::ok(crate::messages::ReplyBody::None)
        })
    }

    /// Whether the last synchronising reply reported an error (the context may be faulted).
    pub fn failed(&self) -> bool {
        self.failed || self.deferred.is_some()
    }

    /// Whether queued work waits to be transmitted.
    pub fn has_transmit(&self) -> bool {
        !self.batch.is_empty()
    }

    /// The queued bytes, to write to the call stream in this order.
    pub fn take_transmit(&mut self) -> Vec<u8> {
        let cap = self.batch.capacity();
        std::mem::replace(&mut self.batch, Vec::with_capacity(cap))
    }

    /// Whether a reply of an asynchronous copy into `[dst, dst + len)` is still to come (the
    /// memory is about to be freed: collect it first).
    pub fn reads_pending(&self, dst: u64, len: u64) -> bool {
        self.owed
            .iter()
            .any(|o| o.asynchronous && o.dst < dst.saturating_add(len) && dst < o.dst + o.len)
    }

    /// Whether any reply is still to come.
    pub fn awaiting(&self) -> bool {
        !self.owed.is_empty()
    }

    /// Feeds bytes read from the call stream; data is written through `sink` before this
    /// returns, so a reply is taken only after its data has landed.
    pub fn handle_bytes(&mut self, bytes: Bytes, sink: &mut dyn Sink) -> Result<(), ConnError> {
        self.alive()?;
        self.stats.bytes_in += bytes.len() as u64;
        self.decoder.feed(bytes);
        loop {
            let ev = match self.decoder.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(format!("bad reply from the server: {e}"))),
            };
            match ev {
                FrameEvent::Header { prefix, header } => {
                    let Some(owed) = self.owed.pop_front() else {
                        return Err(self.fail("the server sent a reply nobody asked for".into()));
                    };
                    let reply = match decode::<Reply>(&header) {
                        Ok(r) => r,
                        Err(e) => return Err(self.fail(format!("bad reply from the server: {e}"))),
                    };
                    if reply.status == 0 && reply.body.kind() != owed.expects {
                        return Err(self.fail(format!(
                            "the server answered {:?} with a {:?} reply",
                            owed.expects,
                            reply.body.kind()
                        )));
                    }
                    if prefix.payload_len != 0 && prefix.payload_len != owed.len {
                        return Err(self.fail(format!(
                            "reply carries {} bytes, {} expected",
                            prefix.payload_len, owed.len
                        )));
                    }
                    let r = Receiving {
                        owed,
                        reply,
                        offset: 0,
                    };
                    if prefix.payload_len == 0 {
                        self.complete(r);
                    } else {
                        self.receiving = Some(r);
                    }
                }
                FrameEvent::Payload { chunk, last } => {
                    let Some(r) = self.receiving.as_mut() else {
                        return Err(self.fail("reply data without a reply".into()));
                    };
                    sink.write(r.owed.dst, r.offset, &chunk);
                    r.offset += chunk.len() as u64;
                    if last {
                        if let Some(r) = self.receiving.take() {
                            self.complete(r);
                        }
                    }
                }
            }
        }
    }

    fn complete(&mut self, r: Receiving) {
        let Receiving {
            owed, mut reply, ..
        } = r;
        if owed.asynchronous {
            self.output.push_str(&std::mem::take(&mut reply.output));
            if reply.status != 0 && self.deferred.is_none() {
                self.deferred = Some(reply.clone());
                self.deferred_from = owed.keep.then_some(owed.ticket);
            }
            if owed.keep {
                self.done.insert(owed.ticket, reply);
            }
            return;
        }
        let mut output = std::mem::take(&mut self.output);
        output.push_str(&reply.output);
        self.deferred_from = None;
        let reply = match self.deferred.take() {
            // An earlier asynchronous copy failed: report it here, as CUDA reports
            // asynchronous errors at the next synchronising call.
            Some(d) if reply.status == 0 => Reply { output, ..d },
            // The call's own error wins, as the old one would have been reported first.
            _ => Reply { output, ..reply },
        };
        self.settled = reply.idle && reply.status == 0 && owed.seq == self.seq;
        self.failed = reply.status != 0;
        self.done.insert(owed.ticket, reply);
    }

    /// The reply for `ticket` once it has arrived (its data already delivered). A posted
    /// call's failure taken here is reported here, and no longer by the next synchronising call.
    pub fn take_reply(&mut self, ticket: Ticket) -> Option<Result<Reply, ConnError>> {
        if let Some(r) = self.done.remove(&ticket) {
            if self.deferred_from == Some(ticket) {
                self.deferred_from = None;
                self.deferred = None;
            }
            return Some(Ok(r));
        }
        self.lost
            .as_ref()
            .map(|why| Err(ConnError::Lost(why.clone())))
    }

    /// Marks the connection lost: every waiting and later call fails with `why`.
    pub fn fail(&mut self, why: String) -> ConnError {
        ConnError::Lost(self.lost.get_or_insert(why).clone())
    }

    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}
