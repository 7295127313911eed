//! The two ends of the call pipeline, pumped through memory (quinn's `Pair` is the model): no
//! sockets, no runtime, every byte boundary under the test's control.

use std::collections::BTreeMap;

use bytes::Bytes;
use remora_protocol::handshake::{
    server_accept, ClientEvent, ClientHandshake, HandshakeError, ServerDecision, ServerHandshake,
};
use remora_protocol::messages::{
    CtxId, DeviceInfo, GlobalDesc, ModuleId, ReplyBody, ServerInfo, SessionRequest, StreamId,
};
// Host memory for device-to-host data: destination addresses are keys.
use remora_protocol::client::Buffers as Host;
use remora_protocol::{
    ClientConn, ConnError, CuStatus, Flush, Reply, Request, ServerConn, ServerEvent, Ticket,
};

/// A server with a toy memory: enough to give replies meaning, errors included.
#[derive(Default)]
struct Toy {
    conn: ServerConn,
    mem: BTreeMap<u64, Vec<u8>>,
    next: u64,
    deferred: Option<Reply>,
    /// (request name, wanted a reply) in arrival order.
    seen: Vec<(&'static str, bool)>,
    /// The call whose payload is arriving: (destination, offset).
    writing: Option<(u64, u64)>,
    /// Whether replies say the session is idle (a backend that runs calls to completion).
    busy: bool,
}

impl Toy {
    fn find(&mut self, ptr: u64, len: u64) -> Option<(&mut Vec<u8>, usize)> {
        let (&base, buf) = self.mem.range_mut(..=ptr).next_back()?;
        let off = (ptr - base) as usize;
        (off as u64 + len <= buf.len() as u64).then_some((buf, off))
    }

    fn fault(what: &str) -> Reply {
        Reply::error(CuStatus::INVALID_VALUE, what)
    }

    fn run(&mut self, bytes: &[u8]) {
        self.conn.feed(Bytes::copy_from_slice(bytes));
        while let Some(ev) = self.conn.poll_event().expect("well-formed requests") {
            match ev {
                ServerEvent::Call {
                    req, wants_reply, ..
                } => {
                    self.seen.push((req.name(), wants_reply));
                    let (result, data) = self.apply(req);
                    if wants_reply {
                        let r = match (result, self.deferred.take()) {
                            (r, None) => r,
                            (r, Some(_)) if r.status != 0 => r,
                            (_, Some(d)) => d,
                        };
                        let r = Reply {
                            idle: !self.busy,
                            ..r
                        };
                        self.conn.reply(&r, data.len() as u64);
                        self.conn.reply_data().extend_from_slice(&data);
                    } else if result.status != 0 {
                        self.deferred.get_or_insert(result);
                    }
                }
                ServerEvent::Payload { chunk, last } => {
                    let (dst, off) = self.writing.expect("payload only after a copy");
                    if let Some((buf, o)) = self.find(dst + off, chunk.len() as u64) {
                        buf[o..o + chunk.len()].copy_from_slice(&chunk);
                    }
                    self.writing = (!last).then_some((dst, off + chunk.len() as u64));
                }
            }
        }
    }

    fn apply(&mut self, req: Request) -> (Reply, Vec<u8>) {
        match req {
            Request::MemAlloc { size, .. } => {
                let ptr = 0x1000_0000 + self.next;
                self.next += size.next_multiple_of(256);
                self.mem.insert(ptr, vec![0; size as usize]);
                (Reply::ok(ReplyBody::Ptr { ptr }), vec![])
            }
            Request::MemcpyHtoD { dst, .. } => {
                self.writing = Some((dst, 0));
                (Reply::ok(ReplyBody::None), vec![])
            }
            Request::MemcpyDtoH { src, size, .. } => match self.find(src, size) {
                Some((buf, o)) => (
                    Reply::ok(ReplyBody::Data),
                    buf[o..o + size as usize].to_vec(),
                ),
                None => (Self::fault("bad read"), vec![]),
            },
            Request::Memset {
                dst, value, width, ..
            } => match self.find(dst, width) {
                Some((buf, o)) => {
                    buf[o..o + width as usize].fill(value as u8);
                    (Reply::ok(ReplyBody::None), vec![])
                }
                None => (Self::fault("bad memset"), vec![]),
            },
            Request::ModuleLoad { hash, .. } if hash[0] == 0xbd => {
                // The image is read and dropped.
                self.writing = Some((0, 0));
                (Reply::error(CuStatus::INVALID_PTX, "bad image"), vec![])
            }
            Request::ModuleLoad { hash, .. } => (
                {
                    self.writing = Some((0, 0));
                    Reply::ok(ReplyBody::Module {
                        kernels: Vec::new(),
                        globals: vec![GlobalDesc {
                            name: "g".into(),
                            addr: u64::from(hash[0]),
                            size: 4,
                        }],
                    })
                },
                vec![],
            ),
            _ => (Reply::ok(ReplyBody::None), vec![]),
        }
    }
}

struct Pair {
    client: ClientConn,
    server: Toy,
    host: Host,
    /// Bytes are moved in pieces of this size, so frames split everywhere.
    piece: usize,
    /// Writes the client made (each is a packet's worth of syscalls on a real link).
    writes: usize,
}

impl Pair {
    fn new(piece: usize) -> Self {
        Self {
            client: ClientConn::new(),
            server: Toy::default(),
            host: Host::default(),
            piece,
            writes: 0,
        }
    }

    /// Transmits what the client queued (and a large payload after it), then brings the
    /// server's replies back.
    fn pump(&mut self, payload: Option<&[u8]>) {
        let mut wire = self.client.take_transmit();
        if let Some(p) = payload {
            wire.extend_from_slice(p);
        }
        if !wire.is_empty() {
            self.writes += 1;
        }
        for piece in wire.chunks(self.piece) {
            self.server.run(piece);
        }
        let back = self.server.conn.take_transmit();
        for piece in back.chunks(self.piece) {
            self.client
                .handle_bytes(Bytes::copy_from_slice(piece), &mut self.host)
                .unwrap();
        }
    }

    fn post(&mut self, req: Request, payload: &[u8]) {
        match self.client.post(&req, payload).unwrap() {
            Flush::Later => {}
            Flush::Now => self.pump(None),
            Flush::NowThenPayload => self.pump(Some(payload)),
        }
    }

    fn call(&mut self, req: Request, read: Option<(u64, u64)>) -> Reply {
        let (t, flush) = self.client.call(&req, &[], read).unwrap();
        assert_eq!(flush, Flush::Now);
        self.pump(None);
        self.client.take_reply(t).expect("replied").unwrap()
    }

    fn alloc(&mut self, size: u64) -> u64 {
        match self
            .call(
                Request::MemAlloc {
                    ctx: CtxId(1),
                    size,
                },
                None,
            )
            .body
        {
            ReplyBody::Ptr { ptr } => ptr,
            b => panic!("{b:?}"),
        }
    }
}

fn htod(dst: u64) -> Request {
    Request::MemcpyHtoD {
        ctx: CtxId(1),
        stream: StreamId(0),
        dst,
    }
}

fn dtoh(src: u64, size: u64) -> Request {
    Request::MemcpyDtoH {
        ctx: CtxId(1),
        stream: StreamId(0),
        src,
        size,
    }
}

fn memset(dst: u64, value: u32, width: u64) -> Request {
    Request::Memset {
        ctx: CtxId(1),
        stream: StreamId(0),
        dst,
        pitch: width,
        value,
        elem: 1,
        width,
        height: 1,
    }
}

#[test]
fn asynchronous_calls_wait_in_one_batch_for_the_next_synchronising_call() {
    for piece in [1, 7, 1 << 20] {
        let mut p = Pair::new(piece);
        let buf = p.alloc(4096);
        let writes = p.writes;
        for i in 0..200u64 {
            p.post(memset(buf + i, i as u32, 1), &[]);
        }
        assert_eq!(
            p.writes, writes,
            "nothing written before a synchronising call"
        );
        let r = p.call(dtoh(buf, 200), Some((0xAAAA, 200)));
        assert_eq!(r.status, 0);
        assert_eq!(
            p.writes,
            writes + 1,
            "the batch and the call leave in one write"
        );
        let expect: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        assert_eq!(p.host.0[&0xAAAA], expect);
        assert_eq!(p.server.seen.len(), 1 + 200 + 1);
        assert!(p.server.seen[1..201]
            .iter()
            .all(|&(n, r)| n == "Memset" && !r));
    }
}

#[test]
fn a_large_batch_is_written_before_any_synchronising_call() {
    let mut p = Pair::new(1 << 16);
    let buf = p.alloc(1 << 20);
    let writes = p.writes;
    let data = vec![7u8; 60 << 10];
    for _ in 0..5 {
        p.post(htod(buf), &data);
    }
    assert_eq!(
        p.writes,
        writes + 1,
        "256 KiB of queued calls flush by themselves"
    );
}

#[test]
fn large_payloads_are_written_by_the_caller_after_the_batch_in_order() {
    let mut p = Pair::new(4096);
    let buf = p.alloc(1 << 20);
    p.post(memset(buf, 1, 1 << 20), &[]);
    let big: Vec<u8> = (0..(300u32 << 10)).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        p.client.post(&htod(buf + 16), &big).unwrap(),
        Flush::NowThenPayload
    );
    p.pump(Some(&big));
    let n = 16 + big.len() as u64 + 16;
    let r = p.call(dtoh(buf, n), Some((1, n)));
    assert_eq!(r.status, 0);
    let got = &p.host.0[&1];
    assert_eq!(&got[..16], &[1; 16]);
    assert_eq!(&got[16..16 + big.len()], &big[..]);
    assert_eq!(&got[16 + big.len()..], &[1; 16]);
}

#[test]
fn replies_reach_their_own_callers_whatever_order_they_are_taken_in() {
    let mut p = Pair::new(3);
    let buf = p.alloc(64);
    p.post(memset(buf, 5, 32), &[]);
    // Three threads' calls queued before any reply is read.
    let (a, _) = p.client.call(&dtoh(buf, 8), &[], Some((100, 8))).unwrap();
    let (b, _) = p
        .client
        .call(
            &Request::MemAlloc {
                ctx: CtxId(1),
                size: 16,
            },
            &[],
            None,
        )
        .unwrap();
    p.post(memset(buf + 32, 9, 32), &[]);
    let (c, _) = p
        .client
        .call(&dtoh(buf + 28, 8), &[], Some((200, 8)))
        .unwrap();
    assert!(
        p.client.take_reply(a).is_none(),
        "nothing before the bytes arrive"
    );
    p.pump(None);
    assert!(matches!(
        p.client.take_reply(b).unwrap().unwrap().body,
        ReplyBody::Ptr { .. }
    ));
    assert_eq!(p.client.take_reply(c).unwrap().unwrap().status, 0);
    assert_eq!(p.client.take_reply(a).unwrap().unwrap().status, 0);
    assert_eq!(p.host.0[&100], [5; 8]);
    assert_eq!(p.host.0[&200], [5, 5, 5, 5, 9, 9, 9, 9]);
    assert!(p.client.take_reply(a).is_none(), "a reply is taken once");
}

#[test]
fn an_asynchronous_error_is_reported_by_the_next_synchronising_call_only() {
    let mut p = Pair::new(5);
    let buf = p.alloc(16);
    p.post(memset(0xdead, 1, 1), &[]);
    p.post(memset(buf, 2, 16), &[]);
    let r = p.call(Request::Flush, None);
    assert_eq!(CuStatus(r.status), CuStatus::INVALID_VALUE);
    assert_eq!(r.message, "bad memset");
    assert_eq!(p.call(Request::Flush, None).status, 0, "reported once");
    // The work queued after the failing call still ran.
    assert_eq!(p.call(dtoh(buf, 16), Some((9, 16))).status, 0);
    assert_eq!(p.host.0[&9], [2; 16]);
}

fn load(hash: u8) -> Request {
    Request::ModuleLoad {
        ctx: CtxId(1),
        module: ModuleId(u64::from(hash)),
        hash: [hash; 32],
        kernels: Some(Vec::new()),
    }
}

#[test]
fn a_posted_call_keeps_its_reply_for_its_ticket_and_defers_its_error() {
    let mut p = Pair::new(3);
    let (good, flush) = p.client.post_call(&load(7), b"image").unwrap();
    assert_eq!(flush, Flush::Later, "posted: nothing written yet");
    let (bad, _) = p.client.post_call(&load(0xbd), b"image").unwrap();
    let (forgotten, _) = p.client.post_call(&load(9), b"image").unwrap();
    p.client.forget(forgotten);
    assert!(p.client.take_reply(good).is_none(), "not sent yet");
    p.client.waiting_for(good);
    assert_eq!(
        p.client.stats().round_trips["ModuleLoad"],
        1,
        "a wait counts"
    );
    assert!(!p.client.stats().round_trips.contains_key("MemAlloc"));
    // The next synchronising call carries the loads; the failed one is reported there.
    let r = p.call(Request::Flush, None);
    assert_eq!(CuStatus(r.status), CuStatus::INVALID_PTX);
    assert_eq!(r.message, "bad image");
    assert_eq!(p.server.seen[..3], [("ModuleLoad", true); 3]);
    // Each kept reply is there for its ticket, once.
    let g = p.client.take_reply(good).unwrap().unwrap();
    assert!(matches!(&g.body, ReplyBody::Module { globals, .. } if globals[0].addr == 7));
    assert!(p.client.take_reply(good).is_none());
    let b = p.client.take_reply(bad).unwrap().unwrap();
    assert_eq!(CuStatus(b.status), CuStatus::INVALID_PTX);
    assert!(p.client.take_reply(forgotten).is_none(), "forgotten");
    assert_eq!(p.call(Request::Flush, None).status, 0, "reported once");
    assert_eq!(p.client.stats().posted["ModuleLoad"], 3);
}

#[test]
fn a_posted_failure_taken_by_its_ticket_is_not_reported_again() {
    let mut p = Pair::new(1 << 20);
    let (bad, _) = p.client.post_call(&load(0xbd), b"image").unwrap();
    // Something else reads the replies (a read collected before a free).
    p.pump(None);
    let b = p.client.take_reply(bad).unwrap().unwrap();
    assert_eq!(CuStatus(b.status), CuStatus::INVALID_PTX);
    assert_eq!(p.call(Request::Flush, None).status, 0, "already reported");
    // A large image is written after the batch, by the caller.
    let big = vec![b'x'; 100 << 10];
    let (t, flush) = p.client.post_call(&load(5), &big).unwrap();
    assert_eq!(flush, Flush::NowThenPayload);
    p.pump(Some(&big));
    assert_eq!(p.client.take_reply(t).unwrap().unwrap().status, 0);
}

#[test]
fn pending_reads_land_with_the_next_round_trip_and_their_errors_are_deferred() {
    let mut p = Pair::new(11);
    let buf = p.alloc(64);
    p.post(memset(buf, 3, 64), &[]);
    let t = p.client.post_read(&dtoh(buf, 64), 0x5000, 64).unwrap();
    assert!(p.client.reads_pending(0x5010, 1));
    assert!(!p.client.reads_pending(0x5040, 16));
    assert!(p.host.0.is_empty(), "asynchronous: no data yet");
    p.client.post_read(&dtoh(0xbad, 4), 0x6000, 4).unwrap();
    let r = p.call(Request::Flush, None);
    assert_eq!(p.host.0[&0x5000], [3; 64]);
    assert!(!p.client.reads_pending(0x5000, 64));
    assert_eq!(
        CuStatus(r.status),
        CuStatus::INVALID_VALUE,
        "the failed copy is reported"
    );
    assert_eq!(r.message, "bad read");
    assert!(
        p.client.take_reply(t).is_none(),
        "an asynchronous copy's reply is nobody's"
    );
    assert_eq!(p.call(Request::Flush, None).status, 0);
}

#[test]
fn payload_on_a_request_that_takes_none_is_skipped() {
    let mut server = ServerConn::new();
    let mut wire = Vec::new();
    remora_protocol::frame::encode_prefixed(
        &mut wire,
        &remora_protocol::messages::encode(&Request::Flush),
        1,
        3,
    );
    wire.extend_from_slice(b"xyz");
    remora_protocol::frame::encode_prefixed(
        &mut wire,
        &remora_protocol::messages::encode(&Request::Flush),
        0,
        0,
    );
    server.feed(Bytes::from(wire));
    let mut evs = Vec::new();
    while let Some(e) = server.poll_event().unwrap() {
        evs.push(e);
    }
    assert_eq!(evs.len(), 2);
    assert!(evs
        .iter()
        .all(|e| matches!(e, ServerEvent::Call { payload_len: 0, .. })));
}

#[test]
fn a_broken_server_fails_every_waiting_and_later_call() {
    let mut c = ClientConn::new();
    let (t, _) = c.call(&Request::Flush, &[], None).unwrap();
    let e = c
        .handle_bytes(Bytes::from_static(&[0xff; 32]), &mut Host::default())
        .unwrap_err();
    assert!(
        matches!(e, ConnError::Lost(ref m) if m.contains("bad reply")),
        "{e}"
    );
    assert!(matches!(c.take_reply(t), Some(Err(ConnError::Lost(_)))));
    assert!(c.call(&Request::Flush, &[], None).is_err());
    assert!(c.post(&Request::Flush, &[]).is_err());
}

#[test]
fn a_reply_nobody_asked_for_or_with_the_wrong_length_is_a_protocol_error() {
    let mut s = ServerConn::new();
    s.reply(&Reply::ok(ReplyBody::None), 0);
    let mut c = ClientConn::new();
    assert!(c
        .handle_bytes(Bytes::from(s.take_transmit()), &mut Host::default())
        .is_err());

    let mut c = ClientConn::new();
    let _ = c.call(&dtoh(0, 8), &[], Some((0, 8))).unwrap();
    s.reply(&Reply::ok(ReplyBody::Data), 9);
    s.reply_data().extend_from_slice(&[0; 9]);
    let e = c.handle_bytes(Bytes::from(s.take_transmit()), &mut Host::default());
    assert!(
        matches!(e, Err(ConnError::Lost(ref m)) if m.contains("9 bytes, 8 expected")),
        "{e:?}"
    );
}

fn info() -> ServerInfo {
    ServerInfo {
        driver_version: 13000,
        server_name: "pair".into(),
        devices: vec![DeviceInfo {
            name: "toy".into(),
            uuid: [1; 16],
            total_mem: 1 << 30,
            attributes: vec![],
            emulated: true,
        }],
        lease: 0,
    }
}

#[test]
fn handshake_then_calls_in_the_same_flight() {
    let (mut hs, mut hello) = ClientHandshake::new("tok", &SessionRequest::default());
    // The client may send its first call right behind its hello.
    let mut early = ClientConn::new();
    let (t, _) = early.call(&Request::Flush, &[], None).unwrap();
    hello.extend_from_slice(&early.take_transmit());
    let mut server = ServerHandshake::new("tok");
    let Some(Ok(ServerDecision::Hello { rest, .. })) = server.poll(&hello) else {
        panic!("accepted");
    };
    let mut reply = server_accept(&info());
    let mut sc = ServerConn::with_received(rest);
    let Some(ServerEvent::Call {
        req: Request::Flush,
        wants_reply: true,
        ..
    }) = sc.poll_event().unwrap()
    else {
        panic!("the early call arrives");
    };
    sc.reply(&Reply::ok(ReplyBody::None), 0);
    reply.extend_from_slice(&sc.take_transmit());
    let Some(Ok(ClientEvent::Accepted { info: got, rest })) = hs.poll(&reply) else {
        panic!("accepted");
    };
    assert_eq!(got, info());
    early
        .handle_bytes(Bytes::from(rest), &mut Host::default())
        .unwrap();
    assert_eq!(early.take_reply(t).unwrap().unwrap().status, 0);
    assert_eq!(early.take_reply(Ticket(99)), None);
}

#[test]
fn handshake_refusals_say_why() {
    let (mut hs, hello) = ClientHandshake::new("wrong", &SessionRequest::default());
    let mut server = ServerHandshake::new("right");
    let Some(Ok(ServerDecision::Refuse { reply, why })) = server.poll(&hello) else {
        panic!("refused");
    };
    assert_eq!(why, "invalid token");
    let e = hs.poll(&reply).unwrap().unwrap_err();
    assert!(matches!(e, HandshakeError::BadToken(_)), "{e}");
    let mut server = ServerHandshake::new("right");
    assert!(matches!(
        server.poll(b"GET / HTTP/1.1\r\n"),
        Some(Err(HandshakeError::NotRemora))
    ));
}

#[test]
fn a_synchronisation_with_nothing_outstanding_is_answered_without_a_round_trip() {
    let sync = Request::CtxSynchronize { ctx: CtxId(1) };
    let mut p = Pair::new(64);
    let buf = p.alloc(16);
    assert!(
        p.client.answer_locally(&sync).is_some(),
        "idle, nothing queued"
    );
    assert!(
        p.client
            .answer_locally(&Request::MemAlloc {
                ctx: CtxId(1),
                size: 1
            })
            .is_none(),
        "only calls that merely wait"
    );
    p.post(memset(buf, 1, 16), &[]);
    assert!(
        p.client.answer_locally(&sync).is_none(),
        "work queued since"
    );
    assert_eq!(p.call(dtoh(buf, 16), Some((1, 16))).status, 0);
    let writes = p.writes;
    let r = p.client.answer_locally(&Request::StreamSynchronize {
        ctx: CtxId(1),
        stream: StreamId(0),
    });
    assert_eq!(r.map(|r| r.status), Some(0), "the copy's reply covered it");
    assert_eq!(p.writes, writes);
    assert_eq!(p.client.stats().local.get("StreamSynchronize"), Some(&1));
    // An error is sticky: the next synchronisation asks the server again.
    p.post(memset(0xdead, 1, 1), &[]);
    assert_ne!(p.call(sync.clone(), None).status, 0);
    assert!(p.client.answer_locally(&sync).is_none());
    // A backend still running work says so: always ask.
    let mut p = Pair::new(64);
    p.server.busy = true;
    p.alloc(16);
    assert!(p.client.answer_locally(&sync).is_none());
}

#[test]
fn a_reply_of_the_wrong_type_is_a_protocol_error() {
    let mut s = ServerConn::new();
    let mut c = ClientConn::new();
    let (t, _) = c
        .call(
            &Request::MemAlloc {
                ctx: CtxId(1),
                size: 8,
            },
            &[],
            None,
        )
        .unwrap();
    // A successful reply to an allocation must carry a pointer.
    s.reply(&Reply::ok(ReplyBody::None), 0);
    let e = c.handle_bytes(Bytes::from(s.take_transmit()), &mut Host::default());
    assert!(
        matches!(e, Err(ConnError::Lost(ref m)) if m.contains("Ptr")),
        "{e:?}"
    );
    assert!(matches!(c.take_reply(t), Some(Err(_))));
    // An error reply carries no body, whatever was asked.
    let mut c = ClientConn::new();
    let (t, _) = c
        .call(
            &Request::MemAlloc {
                ctx: CtxId(1),
                size: 8,
            },
            &[],
            None,
        )
        .unwrap();
    s.reply(&Reply::error(CuStatus::OUT_OF_MEMORY, "full"), 0);
    c.handle_bytes(Bytes::from(s.take_transmit()), &mut Host::default())
        .unwrap();
    assert_eq!(
        CuStatus(c.take_reply(t).unwrap().unwrap().status),
        CuStatus::OUT_OF_MEMORY
    );
}
