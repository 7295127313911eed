/* CUDA graphs and stream capture: usage `graphs [launches]` runs every check; `graphs launch N`
 * only captures a graph of N kernels and launches it once, between two synchronisations (for
 * round-trip counting).
 * Checks: a captured stream of kernels, a memset and copies (host-to-device, device-to-device,
 * device-to-host) instantiated and launched many times; a graph built by hand with
 * dependencies; kernel node parameters read back and changed on the graph and on the
 * executable graph; a fork and join through events; capture errors (synchronising inside a
 * capture, ending a capture that is not, capturing the default stream, a cycle); host, event
 * record and wait, child graph and memory nodes built by hand and captured, and their errors. */
#include <cuda.h>
#include "check.h"

static const char *ptx =
    ".version 7.0\n.target sm_80\n.address_size 64\n"
    /* y[i] = y[i] * a + b */
    ".visible .entry axpb(.param .u64 p, .param .u32 n, .param .f32 a, .param .f32 b) {\n"
    "  .reg .pred %p; .reg .b32 %r<5>; .reg .b64 %rd<4>; .reg .f32 %f<5>;\n"
    "  ld.param.u64 %rd1, [p]; ld.param.u32 %r1, [n]; ld.param.f32 %f1, [a]; ld.param.f32 %f4, [b];\n"
    "  mov.u32 %r2, %ctaid.x; mov.u32 %r3, %ntid.x; mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r2, %r2, %r3, %r4;\n"
    "  setp.ge.u32 %p, %r2, %r1; @%p bra DONE;\n"
    "  cvta.to.global.u64 %rd1, %rd1; mul.wide.u32 %rd2, %r2, 4; add.s64 %rd3, %rd1, %rd2;\n"
    "  ld.global.f32 %f2, [%rd3]; fma.rn.f32 %f3, %f2, %f1, %f4; st.global.f32 [%rd3], %f3;\n"
    "DONE:\n  ret;\n}\n";

#define N 1024u

static CUfunction f;

static void axpb(CUstream s, CUdeviceptr p, float a, float b) {
    unsigned n = N;
    void *args[] = {&p, &n, &a, &b};
    CHECK(cuLaunchKernel(f, N / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
}

static void expect_all(CUdeviceptr p, float want, const char *what) {
    static float host[N];
    CHECK(cuMemcpyDtoH(host, p, sizeof host));
    int bad = 0;
    for (unsigned i = 0; i < N; i++)
        if (host[i] != want) bad++;
    EXPECT(bad == 0, "%s: %d of %u values differ from %g (first %g)", what, bad, N, want, host[0]);
    if (!bad) printf("ok   %s = %g\n", what, want);
}

/* Capture: memset x, copy host -> x, 3 kernels on x, copy x -> y, kernel on y, y -> host. */
static void captured_stream(int launches) {
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr x, y;
    CHECK(cuMemAlloc(&x, N * 4));
    CHECK(cuMemAlloc(&y, N * 4));
    float *src = NULL, *back = NULL;
    CHECK(cuMemAllocHost((void **)&src, N * 4));
    CHECK(cuMemAllocHost((void **)&back, N * 4));
    for (unsigned i = 0; i < N; i++) src[i] = 1.0f;

    CUstreamCaptureStatus st;
    CHECK(cuStreamIsCapturing(s, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_NONE, "capturing before the capture: %d", st);
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CHECK(cuStreamIsCapturing(s, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_ACTIVE, "not capturing: %d", st);
    CHECK(cuMemsetD32Async(x, 0, N, s));
    CHECK(cuMemcpyHtoDAsync(x, src, N * 4, s));
    axpb(s, x, 2.0f, 1.0f);  /* 3 */
    axpb(s, x, 2.0f, 1.0f);  /* 7 */
    axpb(s, x, 1.0f, -7.0f); /* 0 */
    CHECK(cuMemcpyDtoDAsync(y, x, N * 4, s));
    axpb(s, y, 1.0f, 5.0f);  /* 5 */
    CHECK(cuMemcpyDtoHAsync(back, y, N * 4, s));
    cuuint64_t id = 0;
    CUgraph captured_in = NULL;
    const CUgraphNode *deps = NULL;
    size_t ndeps = 0;
    CHECK(cuStreamGetCaptureInfo(s, &st, &id, &captured_in, &deps, &ndeps));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_ACTIVE && id != 0 && captured_in != NULL && ndeps == 1,
           "capture info: status %d id %llu graph %p deps %zu", st, (unsigned long long)id,
           (void *)captured_in, ndeps);
    /* Nothing ran: x still holds whatever the allocation held, not 0. */
    CUgraph g;
    CHECK(cuStreamEndCapture(s, &g));
    EXPECT(g == captured_in, "the graph ended is not the one captured into");
    CHECK(cuStreamIsCapturing(s, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_NONE, "still capturing after the end: %d", st);
    size_t count = 0;
    CHECK(cuGraphGetNodes(g, NULL, &count));
    EXPECT(count == 8, "captured %zu nodes, want 8", count);
    CUgraphNode nodes[16];
    size_t room = 16;
    CHECK(cuGraphGetNodes(g, nodes, &room));
    EXPECT(room == 8 && nodes[8] == NULL, "GetNodes filled %zu", room);
    CUgraphNodeType t;
    CHECK(cuGraphNodeGetType(nodes[0], &t));
    EXPECT(t == CU_GRAPH_NODE_TYPE_MEMSET, "first node type %d", t);
    CHECK(cuGraphNodeGetType(nodes[2], &t));
    EXPECT(t == CU_GRAPH_NODE_TYPE_KERNEL, "third node type %d", t);

    CUgraphExec exec;
    CHECK(cuGraphInstantiateWithFlags(&exec, g, 0));
    for (int i = 0; i < launches; i++) {
        memset(back, 0xff, N * 4);
        src[0] = (float)i; /* read when the graph runs: y[0] = ((i*2+1)*2+1) - 7 + 5 */
        CHECK(cuGraphLaunch(exec, s));
        CHECK(cuStreamSynchronize(s));
        float want0 = ((float)i * 2.0f + 1.0f) * 2.0f + 1.0f - 7.0f + 5.0f;
        if (back[0] != want0 || back[N - 1] != 5.0f) {
            EXPECT(0, "launch %d: y[0] = %g (want %g), y[N-1] = %g", i, back[0], want0, back[N - 1]);
            break;
        }
    }
    printf("ok   %d launches of a captured graph\n", launches);
    /* The graph can be destroyed before its executable graph. */
    CHECK(cuGraphDestroy(g));
    src[0] = 1.0f;
    CHECK(cuGraphLaunch(exec, s));
    CHECK(cuStreamSynchronize(s));
    EXPECT(back[0] == 5.0f, "after the graph's destruction y[0] = %g", back[0]);
    CHECK(cuGraphExecDestroy(exec));
    EXPECT_ERR(cuGraphLaunch(exec, s), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_ERR(cuGraphDestroy(g), CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuMemFree(x));
    CHECK(cuMemFree(y));
    CHECK(cuStreamDestroy(s));
}

/* By hand: a memset root, two kernels after it on two buffers, a copy joining them. */
static void built_by_hand(void) {
    CUdeviceptr a, b;
    CHECK(cuMemAlloc(&a, N * 4));
    CHECK(cuMemAlloc(&b, N * 4));
    CUgraph g;
    CHECK(cuGraphCreate(&g, 0));
    EXPECT_ERR(cuGraphCreate(&g, 1), CUDA_ERROR_INVALID_VALUE);
    CUDA_MEMSET_NODE_PARAMS ms = {0};
    ms.dst = a; ms.value = 0x40000000; /* 2.0f */ ms.elementSize = 4; ms.width = N; ms.height = 1;
    CUgraphNode set_a, set_b, ka, kb, copy, join;
    CHECK(cuGraphAddMemsetNode(&set_a, g, NULL, 0, &ms, NULL));
    ms.dst = b; ms.value = 0x40400000; /* 3.0f */
    CHECK(cuGraphAddMemsetNode(&set_b, g, NULL, 0, &ms, NULL));
    ms.elementSize = 3;
    EXPECT_ERR(cuGraphAddMemsetNode(&join, g, NULL, 0, &ms, NULL), CUDA_ERROR_INVALID_VALUE);
    ms.elementSize = 4; ms.width = N * 2;
    EXPECT_ERR(cuGraphAddMemsetNode(&join, g, NULL, 0, &ms, NULL), CUDA_ERROR_INVALID_VALUE);

    unsigned n = N;
    float two = 2.0f, zero = 0.0f;
    void *args_a[] = {&a, &n, &two, &zero};
    CUDA_KERNEL_NODE_PARAMS kp = {0};
    kp.func = f; kp.gridDimX = N / 256; kp.gridDimY = 1; kp.gridDimZ = 1;
    kp.blockDimX = 256; kp.blockDimY = 1; kp.blockDimZ = 1; kp.kernelParams = args_a;
    /* Kernels added before their memsets exist as dependencies: the edges are added below. */
    CHECK(cuGraphAddKernelNode(&ka, g, NULL, 0, &kp));
    void *args_b[] = {&b, &n, &two, &zero};
    kp.kernelParams = args_b;
    CHECK(cuGraphAddKernelNode(&kb, g, &set_b, 1, &kp));
    kp.blockDimX = 2048;
    EXPECT_ERR(cuGraphAddKernelNode(&join, g, NULL, 0, &kp), CUDA_ERROR_INVALID_VALUE);
    kp.blockDimX = 256;
    CHECK(cuGraphAddDependencies(g, &set_a, &ka, 1));
    EXPECT_ERR(cuGraphAddDependencies(g, &set_a, &ka, 1), CUDA_ERROR_INVALID_VALUE);

    /* b[0..N/2) = a[0..N/2) after both kernels. */
    CUDA_MEMCPY3D cp = {0};
    cp.srcMemoryType = CU_MEMORYTYPE_DEVICE; cp.srcDevice = a;
    cp.dstMemoryType = CU_MEMORYTYPE_DEVICE; cp.dstDevice = b;
    cp.WidthInBytes = N * 2; cp.Height = 1; cp.Depth = 1;
    CUgraphNode both[2] = {ka, kb};
    CHECK(cuGraphAddMemcpyNode(&copy, g, both, 2, &cp, NULL));
    CHECK(cuGraphAddEmptyNode(&join, g, &copy, 1));
    size_t roots = 0;
    CHECK(cuGraphGetRootNodes(g, NULL, &roots));
    EXPECT(roots == 2, "%zu root nodes, want 2", roots);
    size_t edges = 0;
    CHECK(cuGraphGetEdges(g, NULL, NULL, &edges));
    EXPECT(edges == 5, "%zu edges, want 5", edges);

    /* Kernel node parameters read back. */
    CUDA_KERNEL_NODE_PARAMS got = {0};
    CHECK(cuGraphKernelNodeGetParams(kb, &got));
    EXPECT(got.func == f && got.gridDimX == N / 256 && got.blockDimX == 256 &&
           *(CUdeviceptr *)got.kernelParams[0] == b && *(float *)got.kernelParams[2] == 2.0f,
           "kernel node parameters read back wrong");
    EXPECT_ERR(cuGraphKernelNodeGetParams(set_a, &got), CUDA_ERROR_INVALID_VALUE);

    CUgraph copy_g;
    CHECK(cuGraphClone(&copy_g, g));
    CHECK(cuGraphDebugDotPrint(g, "/dev/null", 0));

    CUgraphExec exec;
    CUDA_GRAPH_INSTANTIATE_PARAMS ip = {0};
    CHECK(cuGraphInstantiateWithParams(&exec, g, &ip));
    EXPECT(ip.result_out == CUDA_GRAPH_INSTANTIATE_SUCCESS, "instantiation result %d", ip.result_out);
    CHECK(cuGraphLaunch(exec, NULL));
    CHECK(cuCtxSynchronize());
    float h[N];
    CHECK(cuMemcpyDtoH(h, b, sizeof h));
    EXPECT(h[0] == 4.0f && h[N / 2 - 1] == 4.0f && h[N / 2] == 6.0f && h[N - 1] == 6.0f,
           "hand-built graph: b = %g .. %g | %g .. %g", h[0], h[N / 2 - 1], h[N / 2], h[N - 1]);

    /* New parameters on the executable graph: kernel b multiplies by 10; the graph keeps 2. */
    float ten = 10.0f;
    void *args_b10[] = {&b, &n, &ten, &zero};
    kp.kernelParams = args_b10;
    CHECK(cuGraphExecKernelNodeSetParams(exec, kb, &kp));
    EXPECT_ERR(cuGraphExecKernelNodeSetParams(exec, copy, &kp), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuGraphLaunch(exec, NULL));
    CHECK(cuMemcpyDtoH(h, b, sizeof h));
    EXPECT(h[0] == 4.0f && h[N - 1] == 30.0f, "after exec update: b = %g .. %g", h[0], h[N - 1]);
    /* And on the graph: a fresh instantiation sees multiply-by-3, the old exec still 10. */
    float three = 3.0f;
    void *args_b3[] = {&b, &n, &three, &zero};
    kp.kernelParams = args_b3;
    CHECK(cuGraphKernelNodeSetParams(kb, &kp));
    CUgraphExec exec3;
    CHECK(cuGraphInstantiateWithFlags(&exec3, g, 0));
    CHECK(cuGraphLaunch(exec3, NULL));
    CHECK(cuMemcpyDtoH(h, b, sizeof h));
    EXPECT(h[N - 1] == 9.0f, "after graph update: b[N-1] = %g", h[N - 1]);
    /* The clone was taken before: multiply by 2. */
    CUgraphExec exec_clone;
    CHECK(cuGraphInstantiateWithFlags(&exec_clone, copy_g, 0));
    CHECK(cuGraphLaunch(exec_clone, NULL));
    CHECK(cuMemcpyDtoH(h, b, sizeof h));
    EXPECT(h[N - 1] == 6.0f, "clone: b[N-1] = %g", h[N - 1]);
    printf("ok   hand-built graph, parameter updates, clone\n");

    /* A cycle cannot be instantiated. */
    CHECK(cuGraphAddDependencies(g, &join, &set_a, 1));
    CUgraphExec bad;
    EXPECT_ERR(cuGraphInstantiateWithFlags(&bad, g, 0), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuGraphExecDestroy(exec));
    CHECK(cuGraphExecDestroy(exec3));
    CHECK(cuGraphExecDestroy(exec_clone));
    CHECK(cuGraphDestroy(g));
    CHECK(cuGraphDestroy(copy_g));
    CHECK(cuMemFree(a));
    CHECK(cuMemFree(b));
}

/* Fork and join through events: s1 forks s2, each works on its own buffer, s1 joins. */
static void fork_join(void) {
    CUstream s1, s2;
    CHECK(cuStreamCreate(&s1, CU_STREAM_NON_BLOCKING));
    CHECK(cuStreamCreate(&s2, CU_STREAM_NON_BLOCKING));
    CUevent fork, join;
    CHECK(cuEventCreate(&fork, CU_EVENT_DISABLE_TIMING));
    CHECK(cuEventCreate(&join, CU_EVENT_DISABLE_TIMING));
    CUdeviceptr a, b;
    CHECK(cuMemAlloc(&a, N * 4));
    CHECK(cuMemAlloc(&b, N * 4));
    CHECK(cuStreamBeginCapture(s1, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CHECK(cuMemsetD32Async(a, 0x3f800000, N, s1)); /* 1.0f */
    CHECK(cuEventRecord(fork, s1));
    CHECK(cuStreamWaitEvent(s2, fork, 0));
    CUstreamCaptureStatus st;
    CHECK(cuStreamIsCapturing(s2, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_ACTIVE, "the forked stream is not capturing");
    CHECK(cuMemcpyDtoDAsync(b, a, N * 4, s2));
    axpb(s2, b, 1.0f, 10.0f); /* b = 11 */
    axpb(s1, a, 1.0f, 1.0f);  /* a = 2 */
    /* The join: s1 waits for s2's branch. */
    CHECK(cuEventRecord(join, s2));
    CHECK(cuStreamWaitEvent(s1, join, 0));
    axpb(s1, b, 2.0f, 0.0f);  /* b = 22, after the branch */
    CUgraph g;
    CHECK(cuStreamEndCapture(s1, &g));
    CHECK(cuStreamIsCapturing(s2, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_NONE, "the forked stream still captures");
    CUgraphExec exec;
    CHECK(cuGraphInstantiateWithFlags(&exec, g, 0));
    CHECK(cuGraphLaunch(exec, s1));
    CHECK(cuStreamSynchronize(s1));
    expect_all(a, 2.0f, "fork/join a");
    expect_all(b, 22.0f, "fork/join b");

    /* A fork never joined back: STREAM_CAPTURE_UNJOINED. */
    CHECK(cuStreamBeginCapture(s1, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CHECK(cuEventRecord(fork, s1));
    CHECK(cuStreamWaitEvent(s2, fork, 0));
    axpb(s2, b, 1.0f, 1.0f);
    CUgraph g2 = (CUgraph)1;
    EXPECT_ERR(cuStreamEndCapture(s1, &g2), CUDA_ERROR_STREAM_CAPTURE_UNJOINED);
    EXPECT(g2 == NULL, "an unjoined capture handed out a graph");
    CHECK(cuGraphExecDestroy(exec));
    CHECK(cuGraphDestroy(g));
    CHECK(cuMemFree(a));
    CHECK(cuMemFree(b));
}

static void capture_errors(void) {
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr x;
    CHECK(cuMemAlloc(&x, N * 4));
    CUgraph g = NULL;
    /* Not capturing. */
    EXPECT_ERR(cuStreamEndCapture(s, &g), CUDA_ERROR_ILLEGAL_STATE);
    /* The legacy default stream cannot be captured. */
    EXPECT_ERR(cuStreamBeginCapture(NULL, CU_STREAM_CAPTURE_MODE_GLOBAL),
               CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    EXPECT_ERR(cuStreamBeginCapture(s, 7), CUDA_ERROR_INVALID_VALUE);
    /* Twice. */
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    EXPECT_ERR(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL), CUDA_ERROR_ILLEGAL_STATE);
    axpb(s, x, 1.0f, 1.0f);
    /* Synchronising the capturing stream: unsupported, and the capture is invalidated. */
    EXPECT_ERR(cuStreamSynchronize(s), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    CUstreamCaptureStatus st;
    CHECK(cuStreamIsCapturing(s, &st));
    EXPECT(st == CU_STREAM_CAPTURE_STATUS_INVALIDATED, "status after the sync: %d", st);
    EXPECT_ERR(cuMemsetD32Async(x, 0, N, s), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    EXPECT_ERR(cuStreamEndCapture(s, &g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    EXPECT(g == NULL, "an invalidated capture handed out a graph");
    /* cuCtxSynchronize and a synchronous copy during a global-mode capture. */
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    EXPECT_ERR(cuCtxSynchronize(), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    EXPECT_ERR(cuStreamEndCapture(s, &g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    float h[4];
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    EXPECT_ERR(cuMemcpyDtoH(h, x, sizeof h), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    EXPECT_ERR(cuStreamEndCapture(s, &g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    /* In relaxed mode the thread may synchronise the context: the capture survives. */
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_RELAXED));
    axpb(s, x, 1.0f, 1.0f);
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
    CHECK(cuThreadExchangeStreamCaptureMode(&mode));
    EXPECT(mode == CU_STREAM_CAPTURE_MODE_GLOBAL, "the thread's mode was %d", mode);
    CHECK(cuCtxSynchronize());
    CHECK(cuThreadExchangeStreamCaptureMode(&mode));
    CHECK(cuStreamEndCapture(s, &g));
    size_t count = 0;
    CHECK(cuGraphGetNodes(g, NULL, &count));
    EXPECT(count == 1, "relaxed capture has %zu nodes", count);
    CHECK(cuGraphDestroy(g));
    EXPECT_ERR(cuGraphInstantiateWithFlags((CUgraphExec *)&g, (CUgraph)0x1234, 0),
               CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuStreamSynchronize(s));
    CHECK(cuMemFree(x));
    CHECK(cuStreamDestroy(s));
}

/* Host node data: `in` is copied from the device before the function runs, `out` to the device
 * after it. */
struct host_io { float in, out; int calls; float scale; };

static void host_fn(void *p) {
    struct host_io *h = p;
    h->out = h->in * h->scale;
    h->calls++;
}

static CUgraphNodeType type_of(CUgraphNode n) {
    CUgraphNodeType t = (CUgraphNodeType)-1;
    CHECK(cuGraphNodeGetType(n, &t));
    return t;
}

/* A copy node of `bytes` between host and device (`to_device` says which way). */
static void add_copy(CUgraphNode *out, CUgraph g, CUgraphNode *deps, size_t n, void *host,
                     CUdeviceptr dev, size_t bytes, int to_device) {
    CUDA_MEMCPY3D cp = {0};
    if (to_device) {
        cp.srcMemoryType = CU_MEMORYTYPE_HOST; cp.srcHost = host;
        cp.dstMemoryType = CU_MEMORYTYPE_DEVICE; cp.dstDevice = dev;
    } else {
        cp.srcMemoryType = CU_MEMORYTYPE_DEVICE; cp.srcDevice = dev;
        cp.dstMemoryType = CU_MEMORYTYPE_HOST; cp.dstHost = host;
    }
    cp.WidthInBytes = bytes; cp.Height = 1; cp.Depth = 1;
    CHECK(cuGraphAddMemcpyNode(out, g, deps, n, &cp, NULL));
}

static void add_axpb(CUgraphNode *out, CUgraph g, CUgraphNode *deps, size_t n, CUdeviceptr *p,
                     float *a, float *b) {
    static unsigned count = N;
    void *args[] = {p, &count, a, b};
    CUDA_KERNEL_NODE_PARAMS kp = {0};
    kp.func = f; kp.gridDimX = N / 256; kp.gridDimY = 1; kp.gridDimZ = 1;
    kp.blockDimX = 256; kp.blockDimY = 1; kp.blockDimZ = 1; kp.kernelParams = args;
    CHECK(cuGraphAddKernelNode(out, g, deps, n, &kp));
}

/* Host, event, child graph and memory nodes, built by hand. */
static void new_node_types(void) {
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr x, y;
    CHECK(cuMemAlloc(&x, N * 4));
    CHECK(cuMemAlloc(&y, N * 4));
    static float two = 2.0f, one = 1.0f, zero = 0.0f;

    /* Host node: x = 1 -> x = 3 (kernel) -> host reads x[0], writes 10 * it -> y[0]. */
    struct host_io io = {0, 0, 0, 10.0f};
    CUgraph g;
    CHECK(cuGraphCreate(&g, 0));
    CUDA_MEMSET_NODE_PARAMS ms = {0};
    ms.dst = x; ms.value = 0x3f800000; /* 1.0f */ ms.elementSize = 4; ms.width = N; ms.height = 1;
    CUgraphNode set, k, down, host, up, rec, wait, bad;
    CHECK(cuGraphAddMemsetNode(&set, g, NULL, 0, &ms, NULL));
    add_axpb(&k, g, &set, 1, &x, &two, &one);
    add_copy(&down, g, &k, 1, &io.in, x, 4, 0);
    CUDA_HOST_NODE_PARAMS hp = {host_fn, &io};
    CHECK(cuGraphAddHostNode(&host, g, &down, 1, &hp));
    add_copy(&up, g, &host, 1, &io.out, y, 4, 1);
    CUDA_HOST_NODE_PARAMS got = {0};
    CHECK(cuGraphHostNodeGetParams(host, &got));
    EXPECT(got.fn == host_fn && got.userData == &io, "host node parameters read back wrong");
    EXPECT(type_of(host) == CU_GRAPH_NODE_TYPE_HOST, "host node type %d", type_of(host));
    EXPECT_ERR(cuGraphHostNodeGetParams(k, &got), CUDA_ERROR_INVALID_VALUE);
    CUDA_HOST_NODE_PARAMS null_fn = {NULL, &io};
    EXPECT_ERR(cuGraphAddHostNode(&bad, g, NULL, 0, &null_fn), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuGraphAddHostNode(&bad, NULL, NULL, 0, &hp), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuGraphAddHostNode(&bad, g, NULL, 0, NULL), CUDA_ERROR_INVALID_VALUE);

    /* Event record after the upload, a wait for an event recorded outside the graph. */
    CUevent ev, ev2, outside;
    CHECK(cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING));
    CHECK(cuEventCreate(&ev2, CU_EVENT_DISABLE_TIMING));
    CHECK(cuEventCreate(&outside, CU_EVENT_DISABLE_TIMING));
    CHECK(cuEventRecord(outside, NULL));
    CHECK(cuGraphAddEventWaitNode(&wait, g, NULL, 0, outside));
    CUgraphNode before_rec[2] = {up, wait};
    CHECK(cuGraphAddEventRecordNode(&rec, g, before_rec, 2, ev2));
    CUevent e = NULL;
    CHECK(cuGraphEventRecordNodeGetEvent(rec, &e));
    EXPECT(e == ev2, "event record node event read back wrong");
    CHECK(cuGraphEventRecordNodeSetEvent(rec, ev));
    CHECK(cuGraphEventRecordNodeGetEvent(rec, &e));
    EXPECT(e == ev, "event record node event not changed");
    CHECK(cuGraphEventWaitNodeGetEvent(wait, &e));
    EXPECT(e == outside, "event wait node event read back wrong");
    EXPECT(type_of(rec) == CU_GRAPH_NODE_TYPE_EVENT_RECORD, "record node type %d", type_of(rec));
    EXPECT(type_of(wait) == CU_GRAPH_NODE_TYPE_WAIT_EVENT, "wait node type %d", type_of(wait));
    EXPECT_ERR(cuGraphEventRecordNodeGetEvent(wait, &e), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuGraphEventWaitNodeGetEvent(rec, &e), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuGraphEventWaitNodeSetEvent(host, ev), CUDA_ERROR_INVALID_VALUE);

    CUgraphExec exec;
    CHECK(cuGraphInstantiateWithFlags(&exec, g, 0));
    CHECK(cuGraphLaunch(exec, s));
    CHECK(cuEventSynchronize(ev));
    CHECK(cuEventQuery(ev));
    float h[N];
    CHECK(cuMemcpyDtoH(h, y, 4));
    EXPECT(io.calls == 1 && io.in == 3.0f && h[0] == 30.0f,
           "host node: calls %d, in %g, y[0] %g", io.calls, io.in, h[0]);
    /* New parameters on the executable graph: scale 100 through another struct. */
    struct host_io io2 = {0, 0, 0, 100.0f};
    CUDA_HOST_NODE_PARAMS hp2 = {host_fn, &io2};
    CHECK(cuGraphExecHostNodeSetParams(exec, host, &hp2));
    EXPECT_ERR(cuGraphExecHostNodeSetParams(exec, k, &hp2), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuGraphExecEventRecordNodeSetEvent(exec, rec, ev2));
    EXPECT_ERR(cuGraphExecEventRecordNodeSetEvent(exec, wait, ev2), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuGraphLaunch(exec, s));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuEventQuery(ev2));
    CHECK(cuMemcpyDtoH(h, y, 4));
    /* The copy nodes still read and write `io`: io2 is only the function's data now. */
    EXPECT(io.calls == 1 && io2.calls == 1 && h[0] == 30.0f,
           "exec host update: calls %d/%d, y[0] %g", io.calls, io2.calls, h[0]);
    printf("ok   host node y[0] = 30, event record and wait nodes\n");
    CHECK(cuGraphExecDestroy(exec));

    /* Child graph: x += 1; the parent sets x = 0 and runs the child twice. */
    CUgraph child, parent;
    CHECK(cuGraphCreate(&child, 0));
    CUgraphNode ck;
    add_axpb(&ck, child, NULL, 0, &x, &one, &one);
    CHECK(cuGraphCreate(&parent, 0));
    CUgraphNode pset, c1, c2, cbad;
    ms.dst = x; ms.value = 0;
    CHECK(cuGraphAddMemsetNode(&pset, parent, NULL, 0, &ms, NULL));
    CHECK(cuGraphAddChildGraphNode(&c1, parent, &pset, 1, child));
    CHECK(cuGraphAddChildGraphNode(&c2, parent, &c1, 1, child));
    /* The child was cloned into the node: changing it now does not reach the parent. */
    CUgraphNode extra;
    add_axpb(&extra, child, &ck, 1, &x, &one, &one);
    EXPECT(type_of(c1) == CU_GRAPH_NODE_TYPE_GRAPH, "child node type %d", type_of(c1));
    CUgraph inner = NULL;
    CHECK(cuGraphChildGraphNodeGetGraph(c2, &inner));
    size_t count = 0;
    CHECK(cuGraphGetNodes(inner, NULL, &count));
    EXPECT(inner != NULL && inner != child && count == 1, "child graph has %zu nodes", count);
    EXPECT_ERR(cuGraphChildGraphNodeGetGraph(pset, &inner), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuGraphAddChildGraphNode(&cbad, parent, NULL, 0, NULL), CUDA_ERROR_INVALID_VALUE);
    CUgraph parent2;
    CHECK(cuGraphClone(&parent2, parent));
    CHECK(cuGraphInstantiateWithFlags(&exec, parent, 0));
    for (int i = 0; i < 2; i++) {
        CHECK(cuGraphLaunch(exec, s));
        CHECK(cuStreamSynchronize(s));
        expect_all(x, 2.0f, "child graph twice");
    }
    /* The first child node takes the parameters of a graph of the same shape: x += 5. */
    static float five = 5.0f;
    CUgraph child5;
    CUgraphNode k5;
    CHECK(cuGraphCreate(&child5, 0));
    add_axpb(&k5, child5, NULL, 0, &x, &one, &five);
    CHECK(cuGraphExecChildGraphNodeSetParams(exec, c1, child5));
    CHECK(cuGraphLaunch(exec, s));
    CHECK(cuStreamSynchronize(s));
    expect_all(x, 6.0f, "child graph node with new parameters");
    /* `child` now has two nodes: another shape. A memset node is not a child graph node. */
    EXPECT_ERR(cuGraphExecChildGraphNodeSetParams(exec, c1, child), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuGraphExecChildGraphNodeSetParams(exec, pset, child5), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuGraphLaunch(exec, s));
    CHECK(cuStreamSynchronize(s));
    expect_all(x, 6.0f, "child graph node after refused updates");
    CHECK(cuGraphDestroy(child5));
    printf("ok   child graph node updated in the executable graph\n");
    CHECK(cuGraphExecDestroy(exec));
    CHECK(cuGraphDestroy(parent));
    CHECK(cuGraphInstantiateWithFlags(&exec, parent2, 0));
    CHECK(cuGraphLaunch(exec, s));
    CHECK(cuStreamSynchronize(s));
    expect_all(x, 2.0f, "cloned parent");
    CHECK(cuGraphExecDestroy(exec));
    CHECK(cuGraphDestroy(parent2));
    CHECK(cuGraphDestroy(child));

    /* Memory nodes: alloc -> memset 1 -> kernel (3) -> copy to y -> free. */
    CUgraph gm;
    CHECK(cuGraphCreate(&gm, 0));
    CUdevice dev;
    CHECK(cuCtxGetDevice(&dev));
    CUDA_MEM_ALLOC_NODE_PARAMS ap;
    memset(&ap, 0, sizeof ap);
    ap.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    ap.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    ap.poolProps.location.id = dev;
    ap.bytesize = N * 4;
    CUgraphNode alloc, mset, mk, mcopy, mfree;
    CHECK(cuGraphAddMemAllocNode(&alloc, gm, NULL, 0, &ap));
    static CUdeviceptr m;
    m = ap.dptr;
    EXPECT(m != 0, "no address for the graph allocation");
    ms.dst = m; ms.value = 0x3f800000;
    CHECK(cuGraphAddMemsetNode(&mset, gm, &alloc, 1, &ms, NULL));
    add_axpb(&mk, gm, &mset, 1, &m, &two, &one);
    CUDA_MEMCPY3D cp = {0};
    cp.srcMemoryType = CU_MEMORYTYPE_DEVICE; cp.srcDevice = m;
    cp.dstMemoryType = CU_MEMORYTYPE_DEVICE; cp.dstDevice = y;
    cp.WidthInBytes = N * 4; cp.Height = 1; cp.Depth = 1;
    CHECK(cuGraphAddMemcpyNode(&mcopy, gm, &mk, 1, &cp, NULL));
    CHECK(cuGraphAddMemFreeNode(&mfree, gm, &mcopy, 1, m));
    EXPECT_ERR(cuGraphAddMemFreeNode(&bad, gm, NULL, 0, x), CUDA_ERROR_INVALID_VALUE);
    EXPECT(type_of(alloc) == CU_GRAPH_NODE_TYPE_MEM_ALLOC && type_of(mfree) == CU_GRAPH_NODE_TYPE_MEM_FREE,
           "memory node types %d %d", type_of(alloc), type_of(mfree));
    CUDA_MEM_ALLOC_NODE_PARAMS back;
    memset(&back, 0, sizeof back);
    CHECK(cuGraphMemAllocNodeGetParams(alloc, &back));
    EXPECT(back.dptr == m && back.bytesize == N * 4 && back.poolProps.location.id == dev,
           "allocation node parameters read back wrong");
    CUdeviceptr freed = 0;
    CHECK(cuGraphMemFreeNodeGetParams(mfree, &freed));
    EXPECT(freed == m, "free node address read back wrong");
    EXPECT_ERR(cuGraphMemFreeNodeGetParams(alloc, &freed), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuGraphMemAllocNodeGetParams(mfree, &back), CUDA_ERROR_INVALID_VALUE);
    /* A child graph may not hold memory nodes. */
    CHECK(cuGraphCreate(&parent, 0));
    EXPECT_ERR(cuGraphAddChildGraphNode(&cbad, parent, NULL, 0, gm), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuGraphDestroy(parent));
    CHECK(cuGraphInstantiateWithFlags(&exec, gm, 0));
    for (int i = 0; i < 2; i++) {
        CHECK(cuMemsetD32(y, 0, N));
        CHECK(cuGraphLaunch(exec, s));
        CHECK(cuStreamSynchronize(s));
        expect_all(y, 3.0f, "memory nodes");
    }
    CHECK(cuGraphExecDestroy(exec));
    CHECK(cuGraphDestroy(gm));
    /* An allocation without a free node, freed outside the graph after each launch. */
    CHECK(cuGraphCreate(&gm, 0));
    CHECK(cuGraphAddMemAllocNode(&alloc, gm, NULL, 0, &ap));
    m = ap.dptr;
    ms.dst = m; ms.value = 0x40800000; /* 4.0f */
    CHECK(cuGraphAddMemsetNode(&mset, gm, &alloc, 1, &ms, NULL));
    cp.srcDevice = m;
    CHECK(cuGraphAddMemcpyNode(&mcopy, gm, &mset, 1, &cp, NULL));
    CHECK(cuGraphInstantiateWithFlags(&exec, gm, 0));
    CHECK(cuGraphDestroy(gm));
    for (int i = 0; i < 2; i++) {
        CHECK(cuMemsetD32(y, 0, N));
        CHECK(cuGraphLaunch(exec, s));
        CHECK(cuMemFreeAsync(m, s));
        CHECK(cuStreamSynchronize(s));
        expect_all(y, 4.0f, "allocation freed outside the graph");
    }
    CHECK(cuGraphExecDestroy(exec));
    CHECK(cuGraphDestroy(g));

    EXPECT_ERR(cuGraphNodeGetType(NULL, &(CUgraphNodeType){0}), CUDA_ERROR_INVALID_VALUE);
    EXPECT_ERR(cuGraphGetNodes(NULL, NULL, &count), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuEventDestroy(ev));
    CHECK(cuEventDestroy(ev2));
    CHECK(cuEventDestroy(outside));
    CHECK(cuMemFree(x));
    CHECK(cuMemFree(y));
    CHECK(cuStreamDestroy(s));
}

/* The same kinds captured: an allocation, a host function, an external event record, a wait
 * for an event from outside the capture, a free. */
static void captured_new_nodes(void) {
    CUstream s, other;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CHECK(cuStreamCreate(&other, CU_STREAM_NON_BLOCKING));
    CUdeviceptr y;
    CHECK(cuMemAlloc(&y, N * 4));
    CUevent ev, outside;
    CHECK(cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING));
    CHECK(cuEventCreate(&outside, CU_EVENT_DISABLE_TIMING));
    CHECK(cuEventRecord(outside, other));
    static struct host_io io = {0, 0, 0, 10.0f};
    static CUdeviceptr p;
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CHECK(cuStreamWaitEvent(s, outside, 0));
    CHECK(cuMemAllocAsync(&p, N * 4, s));
    CHECK(cuMemsetD32Async(p, 0x3f800000, N, s)); /* 1 */
    axpb(s, p, 1.0f, 1.0f);                       /* 2 */
    CHECK(cuMemcpyDtoHAsync(&io.in, p, 4, s));
    CHECK(cuLaunchHostFunc(s, host_fn, &io));
    EXPECT(io.calls == 0, "a captured host function ran during the capture");
    CHECK(cuMemcpyHtoDAsync(y, &io.out, 4, s));
    CHECK(cuEventRecordWithFlags(ev, s, CU_EVENT_RECORD_EXTERNAL));
    CHECK(cuMemFreeAsync(p, s));
    CUdeviceptr not_graph;
    CHECK(cuMemAlloc(&not_graph, 4));
    CUgraph g;
    CHECK(cuStreamEndCapture(s, &g));
    CUgraphNode nodes[16];
    size_t count = 16;
    CHECK(cuGraphGetNodes(g, nodes, &count));
    int want[] = {CU_GRAPH_NODE_TYPE_WAIT_EVENT, CU_GRAPH_NODE_TYPE_MEM_ALLOC,
                  CU_GRAPH_NODE_TYPE_MEMSET, CU_GRAPH_NODE_TYPE_KERNEL, CU_GRAPH_NODE_TYPE_MEMCPY,
                  CU_GRAPH_NODE_TYPE_HOST, CU_GRAPH_NODE_TYPE_MEMCPY,
                  CU_GRAPH_NODE_TYPE_EVENT_RECORD, CU_GRAPH_NODE_TYPE_MEM_FREE};
    EXPECT(count == 9, "captured %zu nodes, want 9", count);
    for (size_t i = 0; i < count && i < 9; i++)
        EXPECT((int)type_of(nodes[i]) == want[i], "captured node %zu has type %d, want %d", i,
               type_of(nodes[i]), want[i]);
    CUDA_MEM_ALLOC_NODE_PARAMS ap;
    memset(&ap, 0, sizeof ap);
    CHECK(cuGraphMemAllocNodeGetParams(nodes[1], &ap));
    EXPECT(ap.dptr == p && ap.bytesize == N * 4, "captured allocation parameters wrong");
    CUgraphExec exec;
    CHECK(cuGraphInstantiateWithFlags(&exec, g, 0));
    float h[1];
    for (int i = 0; i < 2; i++) {
        CHECK(cuGraphLaunch(exec, s));
        CHECK(cuStreamSynchronize(s));
        CHECK(cuEventQuery(ev));
        CHECK(cuMemcpyDtoH(h, y, 4));
        EXPECT(io.calls == i + 1 && h[0] == 20.0f, "captured launch %d: calls %d, y[0] %g", i,
               io.calls, h[0]);
    }
    printf("ok   captured host function y[0] = %g\n", h[0]);
    /* A captured free of memory that is no graph allocation. */
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    EXPECT_ERR(cuMemFreeAsync(not_graph, s), CUDA_ERROR_INVALID_VALUE);
    CUgraph g2;
    CHECK(cuStreamEndCapture(s, &g2));
    CHECK(cuGraphDestroy(g2));
    CHECK(cuGraphExecDestroy(exec));
    CHECK(cuGraphDestroy(g));
    CHECK(cuMemFree(not_graph));
    CHECK(cuMemFree(y));
    CHECK(cuEventDestroy(ev));
    CHECK(cuEventDestroy(outside));
    CHECK(cuStreamDestroy(s));
    CHECK(cuStreamDestroy(other));
}

/* One captured graph of `kernels` launches, launched once between two synchronisations. */
static void launch_only(int kernels) {
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr x;
    CHECK(cuMemAlloc(&x, N * 4));
    CHECK(cuMemsetD32(x, 0, N));
    CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    for (int i = 0; i < kernels; i++) axpb(s, x, 1.0f, 1.0f);
    CUgraph g;
    CHECK(cuStreamEndCapture(s, &g));
    CUgraphExec exec;
    CHECK(cuGraphInstantiateWithFlags(&exec, g, 0));
    CHECK(cuStreamSynchronize(s));
    printf("graph launch begins\n");
    fflush(stdout);
    CHECK(cuGraphLaunch(exec, s));
    CHECK(cuStreamSynchronize(s));
    expect_all(x, (float)kernels, "one launch of the graph");
}

int main(int argc, char **argv) {
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuCtxCreate(&ctx, 0, dev));
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ptx));
    CHECK(cuModuleGetFunction(&f, mod, "axpb"));
    if (argc > 2 && strcmp(argv[1], "launch") == 0) {
        launch_only(atoi(argv[2]));
        return finish("graphs");
    }
    int launches = argc > 1 ? atoi(argv[1]) : 100;
    captured_stream(launches);
    built_by_hand();
    fork_join();
    capture_errors();
    new_node_types();
    captured_new_nodes();
    return finish("graphs");
}
