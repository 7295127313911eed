//! A hostile or broken peer speaking the wire protocol directly, without the shim's local
//! checks: the server must refuse what is not the client's, say why, and keep serving others.

mod support;

use std::time::Duration;

use remora_protocol::frame::{encode_prefixed, FramePrefix, FLAG_REPLY, PREFIX_LEN};
use remora_protocol::handshake;
use remora_protocol::messages::{decode, encode, Reply, ReplyBody, Request, Window};
use remora_protocol::messages::{CtxId, EventId, ModuleId, StreamId};
use remora_protocol::{ConnectionFile, MAGIC};
use remora_transport::{client, endpoint};
use support::*;

struct Raw {
    c: client::Connected,
}

impl Raw {
    async fn connect(file: &ConnectionFile, window_base: u64) -> Self {
        let c = client::connect(file, &Default::default(), Duration::from_secs(10), |_| {})
            .await
            .expect("connect");
        let mut raw = Raw { c };
        let windows = vec![Window {
            device: 0,
            base: window_base,
            size: 1 << 40,
        }];
        let r = raw.call(&Request::SetWindows { windows }, &[]).await;
        assert_eq!(r.status, 0, "{}", r.message);
        raw
    }

    async fn send(&mut self, req: &Request, payload: &[u8], flags: u32) {
        let mut buf = Vec::new();
        encode_prefixed(&mut buf, &encode(req), flags, payload.len() as u64);
        buf.extend_from_slice(payload);
        self.c.send.write_all(&buf).await.unwrap();
    }

    /// `MemAlloc`, which must succeed: the pointer.
    async fn alloc(&mut self, ctx: CtxId, size: u64) -> u64 {
        let r = self.call(&Request::MemAlloc { ctx, size }, &[]).await;
        let ReplyBody::Ptr { ptr } = r.body else {
            panic!("{r:?}")
        };
        ptr
    }

    async fn call(&mut self, req: &Request, payload: &[u8]) -> Reply {
        self.send(req, payload, FLAG_REPLY).await;
        let mut p = [0u8; PREFIX_LEN];
        self.c.recv.read_exact(&mut p).await.unwrap();
        let prefix = FramePrefix::parse(&p).unwrap();
        let mut h = vec![0u8; prefix.header_len as usize];
        self.c.recv.read_exact(&mut h).await.unwrap();
        let mut data = vec![0u8; prefix.payload_len as usize];
        self.c.recv.read_exact(&mut data).await.unwrap();
        decode::<Reply>(&h).unwrap()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_server_checks_every_pointer_against_the_clients_own_allocations() {
    let server = Server::start();
    let file = ConnectionFile::read(&server.connection).unwrap();
    rt().block_on(async {
        let mut a = Raw::connect(&file, 0x7000_0000_0000).await;
        a.send(
            &Request::CtxCreate {
                ctx: CtxId(1),
                device: 0,
                flags: 0,
            },
            &[],
            0,
        )
        .await;
        let ptr = a.alloc(CtxId(1), 4096).await;
        a.send(
            &Request::MemcpyHtoD {
                ctx: CtxId(1),
                stream: StreamId(0),
                dst: ptr,
            },
            &[7u8; 4096],
            0,
        )
        .await;

        let mut b = Raw::connect(&file, 0x6000_0000_0000).await;
        b.send(
            &Request::CtxCreate {
                ctx: CtxId(1),
                device: 0,
                flags: 0,
            },
            &[],
            0,
        )
        .await;
        let r = b
            .call(
                &Request::MemcpyDtoH {
                    ctx: CtxId(1),
                    stream: StreamId(0),
                    src: ptr,
                    size: 16,
                },
                &[],
            )
            .await;
        assert_eq!(r.status, 1, "read of another client's memory: {r:?}");
        let r = b.call(&Request::MemFree { ctx: CtxId(1), ptr }, &[]).await;
        assert_eq!(r.status, 1, "free of another client's memory: {r:?}");
        let r = b
            .call(
                &Request::MemcpyHtoD {
                    ctx: CtxId(1),
                    stream: StreamId(0),
                    dst: ptr,
                },
                &[0u8; 16],
            )
            .await;
        assert_eq!(r.status, 1, "write into another client's memory: {r:?}");
        let r = b
            .call(
                &Request::Memset {
                    ctx: CtxId(1),
                    stream: StreamId(0),
                    dst: ptr,
                    pitch: 16,
                    value: 0,
                    elem: 1,
                    width: 16,
                    height: 1,
                },
                &[],
            )
            .await;
        assert_eq!(r.status, 1, "memset of another client's memory: {r:?}");
        // Handles are per client too.
        let r = b
            .call(
                &Request::StreamSynchronize {
                    ctx: CtxId(1),
                    stream: StreamId(99),
                },
                &[],
            )
            .await;
        assert_eq!(r.status, 400, "{r:?}");
        let r = b
            .call(&Request::CtxSynchronize { ctx: CtxId(12345) }, &[])
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        // A deferred error from an asynchronous call surfaces at the next synchronising call.
        b.send(
            &Request::MemcpyDtoD {
                ctx: CtxId(1),
                stream: StreamId(0),
                dst: ptr,
                src: ptr,
                size: 8,
            },
            &[],
            0,
        )
        .await;
        let r = b
            .call(&Request::CtxSynchronize { ctx: CtxId(1) }, &[])
            .await;
        assert_eq!(r.status, 1, "deferred error: {r:?}");
        let r = b
            .call(&Request::CtxSynchronize { ctx: CtxId(1) }, &[])
            .await;
        assert_eq!(r.status, 0, "reported once: {r:?}");

        // A's memory is untouched.
        a.send(
            &Request::MemcpyDtoH {
                ctx: CtxId(1),
                stream: StreamId(0),
                src: ptr,
                size: 4096,
            },
            &[],
            FLAG_REPLY,
        )
        .await;
        let mut p = [0u8; PREFIX_LEN];
        a.c.recv.read_exact(&mut p).await.unwrap();
        let prefix = FramePrefix::parse(&p).unwrap();
        let mut h = vec![0u8; prefix.header_len as usize];
        a.c.recv.read_exact(&mut h).await.unwrap();
        let mut data = vec![0u8; prefix.payload_len as usize];
        a.c.recv.read_exact(&mut data).await.unwrap();
        assert_eq!(decode::<Reply>(&h).unwrap().status, 0);
        assert!(data.iter().all(|&b| b == 7));
    });
}

#[test]
fn a_different_protocol_version_is_refused_with_a_clear_message() {
    let server = Server::start();
    let file = ConnectionFile::read(&server.connection).unwrap();
    rt().block_on(async {
        let ep = endpoint::client(file.address, file.cert_sha256).unwrap();
        let conn = ep
            .connect(file.address, endpoint::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut hello = Vec::new();
        hello.extend_from_slice(&MAGIC);
        hello.extend_from_slice(&999u32.to_le_bytes());
        hello.extend_from_slice(&(file.token.len() as u16).to_le_bytes());
        hello.extend_from_slice(file.token.as_bytes());
        send.write_all(&hello).await.unwrap();
        let mut p = [0u8; 13];
        recv.read_exact(&mut p).await.unwrap();
        let (v, o, len) = handshake::parse_server_hello_prefix(&p).unwrap();
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.unwrap();
        let err = handshake::finish_server_hello(v, o, &body)
            .unwrap_err()
            .to_string();
        assert!(err.contains("version"), "{err}");
    });
}

#[test]
fn garbage_after_the_handshake_closes_only_that_connection() {
    let mut server = Server::start();
    let file = ConnectionFile::read(&server.connection).unwrap();
    rt().block_on(async {
        let mut bad = Raw::connect(&file, 0x7000_0000_0000).await;
        // A frame whose header is not a request, then one announcing an absurd header.
        let mut junk = Vec::new();
        encode_prefixed(&mut junk, &[0xff; 40], FLAG_REPLY, 0);
        bad.c.send.write_all(&junk).await.unwrap();
        let mut p = [0u8; PREFIX_LEN];
        assert!(
            bad.c.recv.read_exact(&mut p).await.is_err(),
            "the server must close a connection that sends garbage"
        );
        let mut ok = Raw::connect(&file, 0x7000_0000_0000).await;
        let r = ok.call(&Request::MemGetInfo { device: 0 }, &[]).await;
        assert_eq!(r.status, 0);
        let mut huge = Raw::connect(&file, 0x7000_0000_0000).await;
        huge.c
            .send
            .write_all(
                &FramePrefix {
                    header_len: u32::MAX,
                    flags: 0,
                    payload_len: 0,
                }
                .to_bytes(),
            )
            .await
            .unwrap();
        assert!(huge.c.recv.read_exact(&mut p).await.is_err());
    });
    assert!(server.alive(), "the server must survive bad input");
}

#[test]
fn overlapping_or_missing_windows_are_refused() {
    let server = Server::start();
    let file = ConnectionFile::read(&server.connection).unwrap();
    rt().block_on(async {
        let mut c = client::connect(&file, &Default::default(), Duration::from_secs(10), |_| {})
            .await
            .unwrap();
        let mut buf = Vec::new();
        encode_prefixed(
            &mut buf,
            &encode(&Request::SetWindows { windows: vec![] }),
            FLAG_REPLY,
            0,
        );
        c.send.write_all(&buf).await.unwrap();
        let mut p = [0u8; PREFIX_LEN];
        c.recv.read_exact(&mut p).await.unwrap();
        let prefix = FramePrefix::parse(&p).unwrap();
        let mut h = vec![0u8; prefix.header_len as usize];
        c.recv.read_exact(&mut h).await.unwrap();
        let r = decode::<Reply>(&h).unwrap();
        assert_eq!(r.status, 1);
        assert!(r.message.contains("windows"), "{}", r.message);
    });
}

#[test]
fn module_images_are_checked_as_they_arrive_and_the_connection_keeps_serving() {
    let mut server = Server::start();
    let file = ConnectionFile::read(&server.connection).unwrap();
    rt().block_on(async {
        let mut c = Raw::connect(&file, 0x7000_0000_0000).await;
        let ctx = Request::CtxCreate {
            ctx: CtxId(1),
            device: 0,
            flags: 0,
        };
        c.send(&ctx, &[], 0).await;
        let load = |module: u64, hash: [u8; 32]| Request::ModuleLoad {
            ctx: CtxId(1),
            module: ModuleId(module),
            hash,
            kernels: None,
        };
        // 64 MiB of zeros announced as a module: refused from its first bytes, the rest read
        // and dropped, never gathered.
        let zeros = vec![0u8; 64 << 20];
        let r = c.call(&load(10, [1; 32]), &zeros).await;
        assert_eq!(r.status, 200, "INVALID_IMAGE: {}", r.message);
        assert!(r.message.contains("not a module image"), "{}", r.message);
        // PTX whose bytes do not match the hash claimed: refused before the cache sees it.
        let ptx = b".version 7.0\n.target sm_80\n.address_size 64\n\0";
        let r = c.call(&load(11, [2; 32]), ptx).await;
        assert_eq!(r.status, 200, "{} {}", r.status, r.message);
        assert!(r.message.contains("hash"), "{}", r.message);
        // A fatbin container whose header says it is 0 bytes long (found by the fuzzer: the
        // reader used to spin on it forever, holding a server thread).
        let mut spin = vec![0u8; 141];
        spin[..4].copy_from_slice(&0xBA55_ED50u32.to_le_bytes());
        let hash: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(&spin).into()
        };
        let r = c.call(&load(13, hash), &spin).await;
        assert_eq!(r.status, 200, "INVALID_IMAGE: {}", r.message);
        // A load that names an image never sent.
        let r = c.call(&load(12, [3; 32]), &[]).await;
        assert_eq!(r.status, 1, "INVALID_VALUE: {}", r.message);
        // The connection still serves.
        let r = c.call(&Request::MemGetInfo { device: 0 }, &[]).await;
        assert_eq!(r.status, 0, "{}", r.message);
    });
    assert!(server.alive());
}

/// A kernel that copies 8 bytes from `src` to `dst`.
const COPY8: &[u8] = b".version 7.0\n.target sm_80\n.address_size 64\n\
.visible .entry copy8(.param .u64 dst, .param .u64 src) {\n\
  .reg .u64 %rd<4>;\n  ld.param.u64 %rd1, [dst];\n  ld.param.u64 %rd2, [src];\n\
  ld.global.u64 %rd3, [%rd2];\n  st.global.u64 [%rd1], %rd3;\n  ret;\n}\n\0";

#[test]
fn another_clients_handles_and_pointers_replayed_guessed_or_off_by_one_reach_nothing() {
    use sha2::Digest;
    let server = Server::start();
    let file = ConnectionFile::read(&server.connection).unwrap();
    rt().block_on(async {
        let c1 = CtxId(1);
        let s0 = StreamId(0);
        // A: a context, a stream, an event, a module and 4 KiB of 7s.
        let mut a = Raw::connect(&file, 0x7000_0000_0000).await;
        a.send(
            &Request::CtxCreate {
                ctx: c1,
                device: 0,
                flags: 0,
            },
            &[],
            0,
        )
        .await;
        let stream = StreamId(5);
        a.send(
            &Request::StreamCreate {
                ctx: c1,
                stream,
                flags: 0,
                priority: 0,
            },
            &[],
            0,
        )
        .await;
        a.send(
            &Request::EventCreate {
                ctx: c1,
                event: EventId(6),
                flags: 0,
            },
            &[],
            0,
        )
        .await;
        let hash: [u8; 32] = sha2::Sha256::digest(COPY8).into();
        let module = ModuleId(7);
        let r = a
            .call(
                &Request::ModuleLoad {
                    ctx: c1,
                    module,
                    hash,
                    kernels: None,
                },
                COPY8,
            )
            .await;
        assert_eq!(r.status, 0, "{}", r.message);
        let theirs = a.alloc(c1, 4096).await;
        a.send(
            &Request::MemcpyHtoD {
                ctx: c1,
                stream: s0,
                dst: theirs,
            },
            &[7u8; 4096],
            0,
        )
        .await;
        let r = a.call(&Request::CtxSynchronize { ctx: c1 }, &[]).await;
        assert_eq!(r.status, 0);

        // B: its own context and 4 KiB, then A's handles replayed.
        let mut b = Raw::connect(&file, 0x6000_0000_0000).await;
        b.send(
            &Request::CtxCreate {
                ctx: c1,
                device: 0,
                flags: 0,
            },
            &[],
            0,
        )
        .await;
        let mine = b.alloc(c1, 4096).await;
        let invalid_handle = 400;
        for (what, req) in [
            ("A's stream", Request::StreamSynchronize { ctx: c1, stream }),
            (
                "A's event",
                Request::EventSynchronize {
                    ctx: c1,
                    event: EventId(6),
                },
            ),
            ("A's module", Request::ModuleUnload { ctx: c1, module }),
        ] {
            let r = b.call(&req, &[]).await;
            assert_eq!(r.status, invalid_handle, "{what}: {r:?}");
        }
        let launch = |dst: u64, src: u64| Request::Launch {
            ctx: c1,
            stream: s0,
            module,
            kernel: 0,
            grid: [1, 1, 1],
            block: [1, 1, 1],
            shared: 0,
            params: [dst.to_le_bytes(), src.to_le_bytes()].concat(),
            cooperative: false,
        };
        let r = b.call(&launch(mine, theirs), &[]).await;
        assert_eq!(r.status, invalid_handle, "a launch of A's module: {r:?}");

        // Pointers: one past B's own allocation, one before it, inside A's, and guesses near
        // A's window.
        let read = |src: u64, size: u64| Request::MemcpyDtoH {
            ctx: c1,
            stream: s0,
            src,
            size,
        };
        let guesses = [
            mine + 4096,
            mine - 1,
            theirs,
            theirs + 4095,
            0x7000_0000_0000,
            0x7000_0000_1000,
        ];
        for p in guesses {
            let r = b.call(&read(p, 1), &[]).await;
            assert_eq!(r.status, 1, "read at {p:#x}: {r:?}");
        }
        let r = b.call(&read(mine + 4095, 2), &[]).await;
        assert_eq!(r.status, 1, "a read running one byte past the end: {r:?}");
        // A guessed IPC handle opens nothing.
        let r = b
            .call(
                &Request::IpcOpen {
                    ctx: c1,
                    handle: [7; 64],
                },
                &[],
            )
            .await;
        assert_eq!(r.status, 1, "{r:?}");

        // B's own kernel, given A's pointer: the device faults; B sees no byte of A's.
        let mut b2 = Raw::connect(&file, 0x5000_0000_0000).await;
        b2.send(
            &Request::CtxCreate {
                ctx: c1,
                device: 0,
                flags: 0,
            },
            &[],
            0,
        )
        .await;
        let r = b2
            .call(
                &Request::ModuleLoad {
                    ctx: c1,
                    module,
                    hash,
                    kernels: None,
                },
                &[],
            )
            .await;
        assert_eq!(r.status, 0, "the module is cached by hash: {}", r.message);
        let own = b2.alloc(c1, 4096).await;
        b2.send(&launch(own, theirs), &[], 0).await;
        let r = b2.call(&Request::CtxSynchronize { ctx: c1 }, &[]).await;
        assert_eq!(r.status, 700, "ILLEGAL_ADDRESS: {r:?}");

        // A still has its bytes, and its handles still work.
        let r = a
            .call(&Request::StreamSynchronize { ctx: c1, stream }, &[])
            .await;
        assert_eq!(r.status, 0, "{r:?}");
        let r = a.call(&read(theirs, 16), &[]).await;
        assert_eq!(r.status, 0, "{r:?}");
    });
}
