//! The typed intermediate form the interpreter runs: decoded once at load, so the hot loop
//! never looks at strings. Registers are dense per-function slots, predicates are separate
//! slots holding 32-lane masks, branch targets are instruction indices into the module's code.

/// Destination that discards its value (`_`).
pub const SINK: u32 = u32::MAX;

/// Base of the generic-address window of shared memory (far above any device allocation).
pub const SHARED_WINDOW: u64 = 0xF000_0000_0000_0000;
/// Base of the generic-address window of the executing thread's local memory.
pub const LOCAL_WINDOW: u64 = 0xF100_0000_0000_0000;
/// Base of the generic-address window of the kernel parameter buffer.
pub const PARAM_WINDOW: u64 = 0xF200_0000_0000_0000;
/// Size of each window.
pub const WINDOW_SIZE: u64 = 1 << 40;
/// Function `i`'s address, as a value (a function pointer), is `FUNC_WINDOW + i * FUNC_STRIDE`:
/// outside every memory window, so loads and stores through it fault.
pub const FUNC_WINDOW: u64 = 0xF300_0000_0000_0000;
pub const FUNC_STRIDE: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    B128,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    BF16,
    BF16x2,
    F32,
    F64,
    Pred,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "b128" => Ty::B128,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f16x2" => Ty::F16x2,
            "bf16" => Ty::BF16,
            "bf16x2" => Ty::BF16x2,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    #[inline]
    pub fn bits(self) -> u32 {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 | Ty::Pred => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::BF16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::BF16x2 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
            Ty::B128 => 128,
        }
    }

    #[inline]
    pub fn bytes(self) -> u32 {
        self.bits() / 8
    }

    #[inline]
    pub fn signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    #[inline]
    pub fn float(self) -> bool {
        matches!(
            self,
            Ty::F16 | Ty::F16x2 | Ty::BF16 | Ty::BF16x2 | Ty::F32 | Ty::F64
        )
    }
}

/// Special registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sreg {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    Laneid,
    Warpid,
    Nwarpid,
    Smid,
    Nsmid,
    Gridid,
    Clock,
    Clock64,
    GlobalTimer,
    LanemaskEq,
    LanemaskLt,
    LanemaskLe,
    LanemaskGt,
    LanemaskGe,
    DynSmem,
    TotalSmem,
    /// Shared-space address where dynamic shared memory starts.
    DynSharedBase,
    /// `%envreg0`..`%envreg31`, which the driver sets per launch. Only the grid workspace of
    /// a cooperative launch lives there (see `exec::Ctx::grid_workspace`); the rest read 0.
    EnvReg(u8),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Src {
    Reg(u32),
    Imm(u64),
    Sreg(Sreg),
    /// Address of module global `idx` plus an offset (resolved per loaded module).
    Global(u32, i64),
    /// Local-space address of a frame-relative offset.
    Local(u32),
    /// Shared-space address of static shared variable `idx` plus an offset (laid out per kernel).
    Shared(u32, i64),
}

/// A predicate operand: a slot, possibly negated, or a constant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PSrc {
    Reg(u32, bool),
    Imm(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Generic,
    Global,
    Shared,
    Local,
    Const,
    Param,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Addr {
    pub base: Src,
    pub off: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rnd {
    Rn,
    Rz,
    Rm,
    Rp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FTy {
    F16,
    BF16,
    F32,
    F64,
    F16x2,
    BF16x2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum I2 {
    Add,
    Sub,
    MulLo,
    MulHi,
    MulWide,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum I1 {
    Not,
    Cnot,
    Neg,
    Abs,
    Popc,
    Clz,
    Brev,
    Bfind,
    BfindShift,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum I3 {
    MadLo,
    MadHi,
    MadWide,
    Bfe,
    Prmt,
    /// lop3 with the lookup table as immediate.
    Lop3(u8),
    Slct,
    Sad,
    /// Funnel shift: left or right, wrap (shift mod 32) or clamp (at most 32).
    Shf {
        left: bool,
        wrap: bool,
    },
    /// mul24/mad24: 24-bit operands, low or high 32 bits of the 48-bit product, plus c.
    Mad24 {
        hi: bool,
    },
    /// Four-way byte dot product plus c; operands signed or unsigned.
    Dp4a {
        sa: bool,
        sb: bool,
    },
    /// Two-way: 16-bit halves of a times the low or high bytes of b, plus c.
    Dp2a {
        sa: bool,
        sb: bool,
        hi: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F2 {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    /// `min.NaN`, `max.NaN`: NaN in, canonical NaN out.
    MinNaN,
    MaxNaN,
    Copysign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F1 {
    Neg,
    Abs,
    Rcp,
    RcpApprox,
    Sqrt,
    SqrtApprox,
    Rsqrt,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
    /// Round to integral (cvt.rni.f32.f32 and friends), or plain copy with ftz/sat.
    Round(Option<Rnd>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Sync,
    Arrive,
    RedPopc,
    RedAnd,
    RedOr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduxOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Vprintf,
    AssertFail,
    /// Device-side `malloc` and `free` (numba's runtime allocates with them).
    Malloc,
    Free,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Mov {
        d: u32,
        a: Src,
        mask: u64,
    },
    MovPred {
        d: u32,
        a: PSrc,
    },
    /// Pack parts of `bits` each into one register (mov.b64 %rd, {%r1, %r2}).
    Pack {
        d: u32,
        parts: Vec<Src>,
        bits: u32,
    },
    Unpack {
        ds: Vec<u32>,
        a: Src,
        bits: u32,
    },
    Int2 {
        op: I2,
        bits: u32,
        signed: bool,
        sat: bool,
        d: u32,
        a: Src,
        b: Src,
    },
    Int1 {
        op: I1,
        bits: u32,
        signed: bool,
        d: u32,
        a: Src,
    },
    Int3 {
        op: I3,
        bits: u32,
        signed: bool,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    Bfi {
        bits: u32,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
        e: Src,
    },
    /// add.cc/addc/sub.cc/subc/mad.cc/madc: carry in and out of the warp's CC mask.
    Carry {
        sub: bool,
        mad_hi: Option<bool>,
        cin: bool,
        cout: bool,
        bits: u32,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    Float2 {
        op: F2,
        ty: FTy,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
        d: u32,
        a: Src,
        b: Src,
    },
    Float1 {
        op: F1,
        ty: FTy,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
        d: u32,
        a: Src,
    },
    Fma {
        ty: FTy,
        rnd: Rnd,
        ftz: bool,
        sat: bool,
        /// Negative results become +0 (f16 and bf16 forms only).
        relu: bool,
        d: u32,
        a: Src,
        b: Src,
        c: Src,
    },
    /// cvt.rn.f16x2.f32 d, a, b: a into the upper half, b into the lower.
    CvtPack {
        bf: bool,
        rnd: Rnd,
        relu: bool,
        d: u32,
        a: Src,
        b: Src,
    },
    /// cp.async, done at once: `size` bytes from global to shared, zero-filled past `src_size`.
    CpAsync {
        size: u32,
        src_size: Src,
        dst: Addr,
        src: Addr,
    },
    Cvt {
        to: Ty,
        from: Ty,
        rnd: Option<Rnd>,
        int_rnd: bool,
        ftz: bool,
        sat: bool,
        d: u32,
        a: Src,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        p: u32,
        q: u32,
        a: Src,
        b: Src,
        comb: Option<(BoolOp, PSrc)>,
    },
    /// set: like setp but writes 0xFFFFFFFF/1.0 into a register.
    Set {
        cmp: Cmp,
        ty: Ty,
        dty: Ty,
        ftz: bool,
        d: u32,
        a: Src,
        b: Src,
        comb: Option<(BoolOp, PSrc)>,
    },
    PredLogic {
        op: BoolOp,
        d: u32,
        a: PSrc,
        b: PSrc,
    },
    PredNot {
        d: u32,
        a: PSrc,
    },
    Selp {
        mask: u64,
        d: u32,
        a: Src,
        b: Src,
        p: PSrc,
    },
    Ld {
        space: Space,
        size: u32,
        n: u32,
        ds: Vec<u32>,
        addr: Addr,
        sext: u32,
    },
    St {
        space: Space,
        size: u32,
        n: u32,
        srcs: Vec<Src>,
        addr: Addr,
    },
    Atom {
        space: Space,
        op: AtomOp,
        ty: Ty,
        d: u32,
        addr: Addr,
        b: Src,
        c: Src,
    },
    Bra {
        target: u32,
    },
    Call {
        func: u32,
        args: Vec<(u32, u32)>,
        rets: Vec<(u32, u32)>,
    },
    /// `call` through a function pointer (with a `.callprototype` or `.calltargets`).
    CallIndirect {
        target: Src,
        args: Vec<(u32, u32)>,
        rets: Vec<(u32, u32)>,
    },
    Builtin {
        which: Builtin,
        args: Vec<(u32, u32)>,
        rets: Vec<(u32, u32)>,
    },
    Ret,
    Exit,
    Trap,
    Nop,
    Bar {
        kind: BarKind,
        id: Src,
        count: Option<Src>,
        d: u32,
        p: PSrc,
    },
    Shfl {
        mode: ShflMode,
        d: u32,
        p: u32,
        a: Src,
        b: Src,
        c: Src,
        member: Src,
    },
    Vote {
        mode: VoteMode,
        d: u32,
        a: PSrc,
        member: Src,
    },
    Activemask {
        d: u32,
    },
    Match {
        all: bool,
        bits: u32,
        d: u32,
        p: u32,
        a: Src,
        member: Src,
    },
    Redux {
        op: ReduxOp,
        signed: bool,
        d: u32,
        a: Src,
        member: Src,
    },
    Cvta {
        to_generic: bool,
        space: Space,
        d: u32,
        a: Src,
        bits: u32,
    },
    Isspacep {
        space: Space,
        p: u32,
        a: Src,
    },
    Testp {
        op: u8,
        ty: FTy,
        p: u32,
        a: Src,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Inst {
    pub op: Op,
    pub guard: Option<(u32, bool)>,
    pub line: u32,
}

/// A lowered function (kernel or `.func`).
#[derive(Debug, Clone)]
pub struct Func {
    pub name: String,
    pub kernel: bool,
    /// First instruction in the module's code; `None` for an external declaration.
    pub entry: Option<u32>,
    pub nregs: u32,
    pub npreds: u32,
    /// Per-thread local bytes of one frame (declared `.local`, `.param` and parameters).
    pub local_bytes: u32,
    /// Frame-relative (offset, size) of each `.param` parameter and return value.
    pub params: Vec<(u32, u32)>,
    pub rets: Vec<(u32, u32)>,
    /// Kernel parameter buffer layout (offset, size).
    pub kparams: Vec<(u32, u32)>,
    pub callees: Vec<u32>,
    /// Calls through function pointers: any function whose address is taken is a callee.
    pub calls_indirect: bool,
    /// Static shared variables this function refers to.
    pub shared_used: Vec<u32>,
    pub max_threads: Option<u32>,
    pub builtin: Option<Builtin>,
    pub line: u32,
}
