//! The instruction set the parser knows: one [`Opcode`] per PTX opcode, and the modifiers of an
//! instruction decoded once into [`Mods`] (types, state space, rounding, comparison, and the
//! flags lowering looks at). Modifiers nothing reads (`.nc`, `.volatile`, `.sync`, scopes and
//! cache operators) are dropped here; the instruction's text is kept for messages.

use crate::ir::{BoolOp, Cmp, Rnd, Space, Ty};

macro_rules! opcodes {
    ($($(#[$doc:meta])* $v:ident = $s:literal,)*) => {
        /// A PTX opcode. [`Opcode::Unknown`] is any other name in opcode position: it parses
        /// (operands and all) and lowering refuses it as not supported, naming it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Opcode {
            $($(#[$doc])* $v,)*
            Unknown,
        }

        impl Opcode {
            /// The opcode named `s`, or [`Opcode::Unknown`].
            pub fn parse(s: &str) -> Opcode {
                match s {
                    $($s => Opcode::$v,)*
                    _ => Opcode::Unknown,
                }
            }

            /// The opcode's PTX spelling (`"?"` for [`Opcode::Unknown`]).
            pub fn name(self) -> &'static str {
                match self {
                    $(Opcode::$v => $s,)*
                    Opcode::Unknown => "?",
                }
            }
        }
    };
}

opcodes! {
    // Data movement and conversion.
    Mov = "mov",
    Cvt = "cvt",
    Cvta = "cvta",
    Isspacep = "isspacep",
    // Integer and bit arithmetic.
    Add = "add",
    Sub = "sub",
    Mul = "mul",
    Div = "div",
    Rem = "rem",
    Min = "min",
    Max = "max",
    And = "and",
    Or = "or",
    Xor = "xor",
    Shl = "shl",
    Shr = "shr",
    Not = "not",
    Cnot = "cnot",
    Abs = "abs",
    Neg = "neg",
    Popc = "popc",
    Clz = "clz",
    Brev = "brev",
    Bfind = "bfind",
    Bfe = "bfe",
    Bfi = "bfi",
    Prmt = "prmt",
    Shf = "shf",
    Lop3 = "lop3",
    Mul24 = "mul24",
    Mad24 = "mad24",
    Mad = "mad",
    Sad = "sad",
    Addc = "addc",
    Subc = "subc",
    Madc = "madc",
    Dp4a = "dp4a",
    Dp2a = "dp2a",
    // Floating point.
    Fma = "fma",
    Copysign = "copysign",
    Rcp = "rcp",
    Sqrt = "sqrt",
    Rsqrt = "rsqrt",
    Ex2 = "ex2",
    Lg2 = "lg2",
    Sin = "sin",
    Cos = "cos",
    Tanh = "tanh",
    Testp = "testp",
    // Comparison and selection.
    Setp = "setp",
    Set = "set",
    Selp = "selp",
    Slct = "slct",
    // Memory.
    Ld = "ld",
    Ldu = "ldu",
    St = "st",
    Cp = "cp",
    Atom = "atom",
    Red = "red",
    Prefetch = "prefetch",
    Prefetchu = "prefetchu",
    Discard = "discard",
    Applypriority = "applypriority",
    Createpolicy = "createpolicy",
    Membar = "membar",
    Fence = "fence",
    // Control flow.
    Bra = "bra",
    Brx = "brx",
    Call = "call",
    Ret = "ret",
    Exit = "exit",
    Trap = "trap",
    Brkpt = "brkpt",
    Nanosleep = "nanosleep",
    Pmevent = "pmevent",
    Griddepcontrol = "griddepcontrol",
    Bar = "bar",
    Barrier = "barrier",
    // Warp collectives.
    Shfl = "shfl",
    Vote = "vote",
    Activemask = "activemask",
    Match = "match",
    Redux = "redux",
    // Refused families (textures, surfaces, tensor cores, TMA, clusters, stack): their
    // operands are not parsed.
    Tex = "tex",
    Tld4 = "tld4",
    Txq = "txq",
    Suld = "suld",
    Sust = "sust",
    Sured = "sured",
    Suq = "suq",
    Mma = "mma",
    Wmma = "wmma",
    Wgmma = "wgmma",
    Ldmatrix = "ldmatrix",
    Stmatrix = "stmatrix",
    Tensormap = "tensormap",
    Tcgen05 = "tcgen05",
    Movmatrix = "movmatrix",
    Istypep = "istypep",
    Mbarrier = "mbarrier",
    Setmaxnreg = "setmaxnreg",
    Multimem = "multimem",
    Clusterlaunchcontrol = "clusterlaunchcontrol",
    Elect = "elect",
    Getctarank = "getctarank",
    Alloca = "alloca",
    Stackrestore = "stackrestore",
    Stacksave = "stacksave",
}

impl Opcode {
    /// Instruction families the emulator rejects whose operand syntax is not worth parsing
    /// (`cp` only in its bulk and reduce forms, decided with its modifiers).
    pub fn operands_unparsed(self) -> bool {
        use Opcode::*;
        matches!(
            self,
            Tex | Tld4
                | Txq
                | Suld
                | Sust
                | Sured
                | Suq
                | Mma
                | Wmma
                | Wgmma
                | Ldmatrix
                | Stmatrix
                | Tensormap
                | Tcgen05
                | Movmatrix
                | Istypep
                | Mbarrier
                | Setmaxnreg
                | Multimem
                | Clusterlaunchcontrol
                | Elect
                | Getctarank
                | Alloca
                | Stackrestore
                | Stacksave
        )
    }
}

macro_rules! flags {
    ($($v:ident = $s:literal,)*) => {
        /// A modifier that is a plain flag: its presence is all lowering asks about.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Mod {
            $($v,)*
        }

        impl Mod {
            /// The flag spelled `s` (without the dot).
            pub fn parse(s: &str) -> Option<Mod> {
                Some(match s {
                    $($s => Mod::$v,)*
                    _ => return None,
                })
            }
        }
    };
}

flags! {
    // Arithmetic.
    Ftz = "ftz",
    Sat = "sat",
    Relu = "relu",
    Approx = "approx",
    Full = "full",
    Hi = "hi",
    Lo = "lo",
    Wide = "wide",
    Cc = "cc",
    Xorsign = "xorsign",
    Abs = "abs",
    NaN = "NaN",
    Shiftamt = "shiftamt",
    L = "l",
    Wrap = "wrap",
    To = "to",
    // prmt modes.
    F4e = "f4e",
    B4e = "b4e",
    Rc8 = "rc8",
    Ecl = "ecl",
    Ecr = "ecr",
    Rc16 = "rc16",
    // testp classes.
    Finite = "finite",
    Infinite = "infinite",
    Number = "number",
    Notanumber = "notanumber",
    Normal = "normal",
    Subnormal = "subnormal",
    // Memory.
    V2 = "v2",
    V4 = "v4",
    V8 = "v8",
    Global = "global",
    Shared = "shared",
    SharedCta = "shared::cta",
    L2CacheHint = "L2::cache_hint",
    Async = "async",
    CommitGroup = "commit_group",
    WaitGroup = "wait_group",
    WaitAll = "wait_all",
    Reduce = "reduce",
    Proxy = "proxy",
    Tensormap = "tensormap",
    // Atomic, reduction and bar.red operations.
    Add = "add",
    Min = "min",
    Max = "max",
    Inc = "inc",
    Dec = "dec",
    And = "and",
    Or = "or",
    Xor = "xor",
    Exch = "exch",
    Cas = "cas",
    Popc = "popc",
    // Barriers.
    Cluster = "cluster",
    Warp = "warp",
    Arrive = "arrive",
    Red = "red",
    // Warp collectives.
    Up = "up",
    Down = "down",
    Bfly = "bfly",
    All = "all",
    Any = "any",
    Uni = "uni",
    Ballot = "ballot",
}

/// The modifiers of one instruction, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mods {
    /// The type modifiers, in the order written (`cvt.f32.s32` is `[F32, S32]`).
    pub types: Vec<Ty>,
    /// A type the emulated GPU has no arithmetic for (`.tf32`, fp8 and fp4 kinds, `.s4`, `.b1`).
    pub exotic_type: bool,
    /// The first state space written (`.shared::cluster` is none).
    pub space: Option<Space>,
    /// The first rounding modifier written, integer (`.rni`) or not (`.rn`).
    pub rnd: Option<Rnd>,
    /// Some rounding modifier is an integer one (`.rni`, `.rzi`, `.rmi`, `.rpi`).
    pub int_rnd: bool,
    /// The first comparison written (`.hi` is one, and also a flag).
    pub cmp: Option<Cmp>,
    /// The first of `.and`, `.or`, `.xor` written (they are flags too).
    pub boolop: Option<BoolOp>,
    /// A modifier starting `bulk` (`cp.async.bulk`, refused).
    pub bulk: bool,
    flags: u128,
}

impl Mods {
    /// Decodes one modifier (without its dot) into the set.
    pub fn push(&mut self, m: &str) {
        if let Some(t) = Ty::parse(m) {
            self.types.push(t);
        }
        if is_exotic(m) {
            self.exotic_type = true;
        }
        if m.starts_with("bulk") {
            self.bulk = true;
        }
        if self.space.is_none() {
            self.space = space(m);
        }
        if let Some((r, int)) = rnd(m) {
            self.int_rnd |= int;
            self.rnd.get_or_insert(r);
        }
        if self.cmp.is_none() {
            self.cmp = cmp(m);
        }
        if self.boolop.is_none() {
            self.boolop = match m {
                "and" => Some(BoolOp::And),
                "or" => Some(BoolOp::Or),
                "xor" => Some(BoolOp::Xor),
                _ => None,
            };
        }
        if let Some(f) = Mod::parse(m) {
            self.flags |= 1u128 << f as u8;
        }
    }

    /// Whether flag `f` was written.
    #[inline]
    pub fn has(&self, f: Mod) -> bool {
        self.flags & (1u128 << f as u8) != 0
    }

    /// The first of `fs` that was written, by the order of `fs`.
    pub fn first_of<T: Copy>(&self, fs: &[(Mod, T)]) -> Option<T> {
        fs.iter().find(|(f, _)| self.has(*f)).map(|x| x.1)
    }

    /// The last type written: the instruction's operand type.
    pub fn ty(&self) -> Option<Ty> {
        self.types.last().copied()
    }
}

fn is_exotic(t: &str) -> bool {
    matches!(
        t,
        "tf32"
            | "e4m3x2"
            | "e5m2x2"
            | "e2m1x2"
            | "e2m3x2"
            | "e3m2x2"
            | "ue8m0x2"
            | "s4"
            | "u4"
            | "b1"
    ) || t.starts_with("e4m3")
        || t.starts_with("e5m2")
}

fn space(m: &str) -> Option<Space> {
    Some(match m {
        "global" => Space::Global,
        "shared" | "shared::cta" => Space::Shared,
        "local" => Space::Local,
        "const" => Space::Const,
        "param" | "param::entry" | "param::func" => Space::Param,
        _ => return None,
    })
}

fn rnd(m: &str) -> Option<(Rnd, bool)> {
    Some(match m {
        "rn" => (Rnd::Rn, false),
        "rz" => (Rnd::Rz, false),
        "rm" => (Rnd::Rm, false),
        "rp" => (Rnd::Rp, false),
        "rni" => (Rnd::Rn, true),
        "rzi" => (Rnd::Rz, true),
        "rmi" => (Rnd::Rm, true),
        "rpi" => (Rnd::Rp, true),
        _ => return None,
    })
}

fn cmp(m: &str) -> Option<Cmp> {
    Some(match m {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip() {
        for s in ["mov", "ld", "tex", "shfl", "stacksave", "cp"] {
            assert_eq!(Opcode::parse(s).name(), s);
        }
        assert_eq!(Opcode::parse("frobnicate"), Opcode::Unknown);
    }

    #[test]
    fn modifiers_decode() {
        let mut m = Mods::default();
        for s in ["hi", "rni", "shared::cta", "global", "and", "f32", "s32"] {
            m.push(s);
        }
        assert_eq!(m.types, [Ty::F32, Ty::S32]);
        assert_eq!(m.ty(), Some(Ty::S32));
        assert_eq!(m.space, Some(Space::Shared));
        assert_eq!((m.rnd, m.int_rnd), (Some(Rnd::Rn), true));
        assert_eq!((m.cmp, m.boolop), (Some(Cmp::Hi), Some(BoolOp::And)));
        assert!(m.has(Mod::Hi) && m.has(Mod::SharedCta) && m.has(Mod::Global));
        assert!(!m.has(Mod::Shared) && !m.exotic_type);
        assert_eq!(m.first_of(&[(Mod::Or, 1), (Mod::And, 2)]), Some(2));
    }
}
