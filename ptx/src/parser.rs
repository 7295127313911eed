//! Lexer and parser of PTX text into a light syntax tree; typing happens in `lower`.
//!
//! The parser is fuzz-safe: every error is an [`PtxError::InvalidPtx`] with the line number,
//! nothing indexes past the input and nesting depth is bounded.

use crate::error::PtxError;
pub use crate::isa::{Mod, Mods, Opcode};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Dir(String),
    Int(u64),
    F32(u32),
    F64(u64),
    Float(f64),
    Str(String),
    Punct(char),
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lit {
    Int(u64),
    F32(u32),
    F64(u64),
    Float(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Opnd {
    Name(String),
    Lit(Lit),
    Addr { base: Option<String>, imm: i64 },
    Vec(Vec<Opnd>),
    List(Vec<Opnd>),
    Not(Box<Opnd>),
    Pipe(String, String),
    SymOff(String, i64),
    Sink,
}

#[derive(Debug, Clone)]
pub enum Init {
    Lit(Lit),
    Sym(String, i64),
    List(Vec<Init>),
}

#[derive(Debug, Clone)]
pub struct VarDecl {
    pub line: u32,
    pub space: String,
    pub align: Option<u32>,
    pub vector: u32,
    pub ty: String,
    pub name: String,
    /// Array dimensions; `None` for `[]` (an unsized `.extern .shared` array).
    pub dims: Vec<Option<u64>>,
    /// `%r<100>` declares `%r0`..`%r99`.
    pub range: Option<u32>,
    pub init: Option<Init>,
    pub is_extern: bool,
}

/// One instruction: typed opcode and modifiers, operands as written.
#[derive(Debug, Clone)]
pub struct Inst {
    pub line: u32,
    pub guard: Option<(String, bool)>,
    pub opcode: Opcode,
    pub mods: Mods,
    /// The opcode and modifiers as written (`ld.global.nc.v4.f32`), for messages.
    pub text: String,
    pub args: Vec<Opnd>,
}

#[derive(Debug, Clone)]
pub enum Stmt {
    Decl(VarDecl),
    Label(String),
    Inst(Inst),
    Open,
    Close,
}

#[derive(Debug, Clone)]
pub struct FuncDecl {
    pub line: u32,
    pub kernel: bool,
    pub name: String,
    pub rets: Vec<VarDecl>,
    pub params: Vec<VarDecl>,
    pub body: Option<Vec<Stmt>>,
    pub max_threads: Option<u32>,
    /// `.weak`: linking may meet other definitions of the same name, and keeps one.
    pub weak: bool,
}

#[derive(Debug, Clone)]
pub enum Item {
    Var(VarDecl),
    Func(FuncDecl),
}

#[derive(Debug, Clone, Default)]
pub struct Ast {
    pub items: Vec<Item>,
}

const MAX_DEPTH: u32 = 64;

fn lex(src: &str) -> Result<Vec<(Tok, u32)>, PtxError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0usize;
    let mut line = 1u32;
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'%';
    let ident_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$';
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() || c == 0 {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            i = (i + 2).min(b.len());
        } else if c == b'"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            let s = String::from_utf8_lossy(&b[start..i.min(b.len())]).into_owned();
            i = (i + 1).min(b.len());
            out.push((Tok::Str(s), line));
        } else if c == b'.' && b.get(i + 1).is_some_and(|&c| ident_char(c)) {
            let start = i + 1;
            i += 1;
            // `.L1::evict_last` and `.L2::128B` are one modifier.
            while i < b.len() && (ident_char(b[i]) || (b[i] == b':' && b.get(i + 1) == Some(&b':')))
            {
                i += if b[i] == b':' { 2 } else { 1 };
            }
            out.push((
                Tok::Dir(String::from_utf8_lossy(&b[start..i]).into_owned()),
                line,
            ));
        } else if ident_start(c) {
            let start = i;
            i += 1;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            out.push((
                Tok::Ident(String::from_utf8_lossy(&b[start..i]).into_owned()),
                line,
            ));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                // An exponent sign belongs to a decimal float: 1.5e-3.
                if (b[i] == b'e' || b[i] == b'E')
                    && matches!(b.get(i + 1), Some(b'-') | Some(b'+'))
                    && !b[start..i].starts_with(b"0x")
                    && !b[start..i].starts_with(b"0X")
                {
                    i += 1;
                }
                i += 1;
            }
            let text = String::from_utf8_lossy(&b[start..i.min(b.len())]).into_owned();
            let tok =
                number(&text).ok_or_else(|| PtxError::ptx(line, format!("bad number `{text}`")))?;
            out.push((tok, line));
        } else {
            out.push((Tok::Punct(c as char), line));
            i += 1;
        }
    }
    out.push((Tok::Eof, line));
    Ok(out)
}

fn number(t: &str) -> Option<Tok> {
    let lower = t.to_ascii_lowercase();
    let l = lower.trim_end_matches('u');
    if let Some(h) = l.strip_prefix("0f") {
        if h.len() == 8 {
            return u32::from_str_radix(h, 16).ok().map(Tok::F32);
        }
    }
    if let Some(h) = l.strip_prefix("0d") {
        if h.len() == 16 {
            return u64::from_str_radix(h, 16).ok().map(Tok::F64);
        }
    }
    if let Some(h) = l.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).ok().map(Tok::Int);
    }
    if let Some(h) = l.strip_prefix("0b") {
        return u64::from_str_radix(h, 2).ok().map(Tok::Int);
    }
    if l.contains('.') || l.contains('e') {
        return l.parse::<f64>().ok().map(Tok::Float);
    }
    if l.len() > 1 && l.starts_with('0') && l.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
        return u64::from_str_radix(l, 8).ok().map(Tok::Int);
    }
    l.parse::<u64>().ok().map(Tok::Int)
}

struct Parser {
    toks: Vec<(Tok, u32)>,
    pos: usize,
}

/// Parses PTX text into a syntax tree.
pub fn parse(src: &str) -> Result<Ast, PtxError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    p.module()
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map(|t| &t.0).unwrap_or(&Tok::Eof)
    }
    fn peek_at(&self, n: usize) -> &Tok {
        self.toks
            .get(self.pos + n)
            .map(|t| &t.0)
            .unwrap_or(&Tok::Eof)
    }
    fn line(&self) -> u32 {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map(|t| t.1)
            .unwrap_or(1)
    }
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, PtxError> {
        Err(PtxError::ptx(self.line(), msg))
    }
    fn is_punct(&self, c: char) -> bool {
        *self.peek() == Tok::Punct(c)
    }
    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), PtxError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            self.err(format!("expected `{c}`, found {}", describe(self.peek())))
        }
    }
    fn ident(&mut self) -> Result<String, PtxError> {
        match self.next() {
            Tok::Ident(s) => Ok(s),
            t => {
                self.pos -= 1;
                self.err(format!("expected a name, found {}", describe(&t)))
            }
        }
    }
    fn int(&mut self) -> Result<u64, PtxError> {
        match self.next() {
            Tok::Int(v) => Ok(v),
            t => {
                self.pos = self.pos.saturating_sub(1);
                self.err(format!("expected an integer, found {}", describe(&t)))
            }
        }
    }
    fn skip_line(&mut self) {
        let l = self.line();
        self.pos += 1;
        while !matches!(self.peek(), Tok::Eof) && self.line() == l {
            self.pos += 1;
            if self.toks.get(self.pos - 1).map(|t| &t.0) == Some(&Tok::Punct(';')) {
                break;
            }
        }
    }

    fn skip_to_semicolon(&mut self) {
        while !matches!(self.peek(), Tok::Eof) && !self.is_punct(';') {
            self.pos += 1;
        }
        self.eat_punct(';');
    }

    fn module(&mut self) -> Result<Ast, PtxError> {
        let mut ast = Ast::default();
        loop {
            match self.peek().clone() {
                Tok::Eof => return Ok(ast),
                Tok::Dir(d) => match d.as_str() {
                    "version" | "target" | "address_size" | "file" | "loc" | "pragma" => {
                        self.skip_line()
                    }
                    "section" => self.skip_section()?,
                    _ => self.item(&mut ast)?,
                },
                t => return self.err(format!("unexpected {} at module scope", describe(&t))),
            }
        }
    }

    fn skip_section(&mut self) -> Result<(), PtxError> {
        // `.section .debug_info { ... }`: skip to the matching brace.
        while !self.is_punct('{') {
            if matches!(self.peek(), Tok::Eof) {
                return self.err("unterminated .section");
            }
            self.pos += 1;
        }
        let mut depth = 0u32;
        loop {
            match self.next() {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Tok::Eof => return self.err("unterminated .section"),
                _ => {}
            }
        }
    }

    fn item(&mut self, ast: &mut Ast) -> Result<(), PtxError> {
        let line = self.line();
        let mut is_extern = false;
        let mut weak = false;
        while let Tok::Dir(d) = self.peek() {
            match d.as_str() {
                "weak" => {
                    weak = true;
                    self.pos += 1
                }
                "visible" | "common" => self.pos += 1,
                "extern" => {
                    is_extern = true;
                    self.pos += 1
                }
                _ => break,
            }
        }
        match self.peek().clone() {
            Tok::Dir(d) if d == "entry" || d == "func" => {
                self.pos += 1;
                let mut f = self.func(line, d == "entry")?;
                f.weak = weak;
                ast.items.push(Item::Func(f));
                Ok(())
            }
            Tok::Dir(d) if matches!(d.as_str(), "global" | "const" | "shared" | "local") => {
                let mut v = self.var_decl()?;
                v.is_extern = is_extern;
                self.expect(';')?;
                ast.items.push(Item::Var(v));
                Ok(())
            }
            t => self.err(format!("unexpected {} at module scope", describe(&t))),
        }
    }

    fn func(&mut self, line: u32, kernel: bool) -> Result<FuncDecl, PtxError> {
        let mut rets = Vec::new();
        if self.is_punct('(') {
            rets = self.param_list()?;
        }
        let name = self.ident()?;
        let mut params = Vec::new();
        if self.is_punct('(') {
            params = self.param_list()?;
        }
        let mut max_threads = None;
        while let Tok::Dir(d) = self.peek().clone() {
            {
                {
                    self.pos += 1;
                    let mut nums = Vec::new();
                    while let Tok::Int(v) = self.peek() {
                        nums.push(*v);
                        self.pos += 1;
                        self.eat_punct(',');
                    }
                    if d == "pragma" {
                        self.skip_to_semicolon();
                    }
                    if d == "maxntid" || d == "reqntid" {
                        let prod = nums.iter().try_fold(1u64, |a, &b| a.checked_mul(b));
                        max_threads = prod.and_then(|p| u32::try_from(p).ok());
                    }
                }
            }
        }
        let body = if self.eat_punct(';') {
            None
        } else if self.is_punct('{') {
            Some(self.body()?)
        } else {
            return self.err(format!(
                "expected function body, found {}",
                describe(self.peek())
            ));
        };
        Ok(FuncDecl {
            line,
            kernel,
            name,
            rets,
            params,
            body,
            max_threads,
            weak: false,
        })
    }

    fn param_list(&mut self) -> Result<Vec<VarDecl>, PtxError> {
        self.expect('(')?;
        let mut out = Vec::new();
        if self.eat_punct(')') {
            return Ok(out);
        }
        loop {
            out.push(self.var_decl()?);
            if self.eat_punct(')') {
                return Ok(out);
            }
            self.expect(',')?;
        }
    }

    /// `.space [.ptr .global] [.align N] [.vN] .type name[dims] [= init]` (no `;`).
    fn var_decl(&mut self) -> Result<VarDecl, PtxError> {
        let line = self.line();
        let mut v = VarDecl {
            line,
            space: String::new(),
            align: None,
            vector: 1,
            ty: String::new(),
            name: String::new(),
            dims: Vec::new(),
            range: None,
            init: None,
            is_extern: false,
        };
        while let Tok::Dir(d) = self.peek().clone() {
            self.pos += 1;
            match d.as_str() {
                "reg" | "param" | "global" | "const" | "shared" | "local" | "sreg" => v.space = d,
                "align" => v.align = Some(u32::try_from(self.int()?).unwrap_or(u32::MAX)),
                "v2" => v.vector = 2,
                "v4" => v.vector = 4,
                "v8" => v.vector = 8,
                "ptr" | "global_ptr" => {}
                "attribute" => {
                    // .attribute(.managed)
                    if self.eat_punct('(') {
                        while !self.eat_punct(')') {
                            if matches!(self.next(), Tok::Eof) {
                                return self.err("unterminated .attribute");
                            }
                        }
                    }
                }
                "extern" | "visible" | "weak" => {}
                _ => v.ty = d,
            }
        }
        v.name = self.ident()?;
        if self.eat_punct('<') {
            v.range = Some(u32::try_from(self.int()?).unwrap_or(u32::MAX));
            self.expect('>')?;
        }
        while self.eat_punct('[') {
            if self.eat_punct(']') {
                v.dims.push(None);
            } else {
                v.dims.push(Some(self.int()?));
                self.expect(']')?;
            }
        }
        if self.eat_punct('=') {
            v.init = Some(self.init(0)?);
        }
        Ok(v)
    }

    fn init(&mut self, depth: u32) -> Result<Init, PtxError> {
        if depth > MAX_DEPTH {
            return self.err("initialiser nested too deeply");
        }
        if self.eat_punct('{') {
            let mut items = Vec::new();
            if self.eat_punct('}') {
                return Ok(Init::List(items));
            }
            loop {
                items.push(self.init(depth + 1)?);
                if self.eat_punct('}') {
                    return Ok(Init::List(items));
                }
                self.expect(',')?;
            }
        }
        if let Tok::Ident(name) = self.peek().clone() {
            self.pos += 1;
            // generic(sym) or sym, optionally +offset
            let name = if (name == "generic" || name == "global") && self.eat_punct('(') {
                let n = self.ident()?;
                self.expect(')')?;
                n
            } else {
                name
            };
            let mut off = 0i64;
            if self.eat_punct('+') {
                off = self.int()? as i64;
            }
            return Ok(Init::Sym(name, off));
        }
        Ok(Init::Lit(self.literal()?))
    }

    fn literal(&mut self) -> Result<Lit, PtxError> {
        let neg = self.eat_punct('-');
        let lit = match self.next() {
            Tok::Int(v) => Lit::Int(v),
            Tok::F32(v) => Lit::F32(v),
            Tok::F64(v) => Lit::F64(v),
            Tok::Float(v) => Lit::Float(v),
            t => {
                self.pos = self.pos.saturating_sub(1);
                return self.err(format!("expected a constant, found {}", describe(&t)));
            }
        };
        Ok(if neg {
            match lit {
                Lit::Int(v) => Lit::Int(v.wrapping_neg()),
                Lit::F32(v) => Lit::F32(v ^ 0x8000_0000),
                Lit::F64(v) => Lit::F64(v ^ (1 << 63)),
                Lit::Float(v) => Lit::Float(-v),
            }
        } else {
            lit
        })
    }

    fn body(&mut self) -> Result<Vec<Stmt>, PtxError> {
        self.expect('{')?;
        let mut out = Vec::new();
        let mut depth = 1u32;
        loop {
            let line = self.line();
            match self.peek().clone() {
                Tok::Eof => return self.err("unterminated function body"),
                Tok::Punct('{') => {
                    self.pos += 1;
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return self.err("scopes nested too deeply");
                    }
                    out.push(Stmt::Open);
                }
                Tok::Punct('}') => {
                    self.pos += 1;
                    depth -= 1;
                    if depth == 0 {
                        return Ok(out);
                    }
                    out.push(Stmt::Close);
                }
                Tok::Punct(';') => self.pos += 1,
                Tok::Dir(d) => match d.as_str() {
                    // `.loc` and `.file` end at the end of the line, without `;`.
                    "loc" | "file" => self.skip_line(),
                    "pragma" | "maxnreg" | "maxntid" | "reqntid" | "minnctapersm" => {
                        self.skip_to_semicolon()
                    }
                    "section" => self.skip_section()?,
                    // Prototypes of indirect calls; the call itself is rejected when lowered.
                    "callprototype" | "branchtargets" | "calltargets" => self.skip_to_semicolon(),
                    _ => {
                        let v = self.var_decl()?;
                        let mut decls = vec![v];
                        while self.eat_punct(',') {
                            let mut more = decls[0].clone();
                            more.name = self.ident()?;
                            more.range = None;
                            more.dims.clear();
                            more.init = None;
                            if self.eat_punct('<') {
                                more.range = Some(u32::try_from(self.int()?).unwrap_or(u32::MAX));
                                self.expect('>')?;
                            }
                            while self.eat_punct('[') {
                                more.dims.push(Some(self.int()?));
                                self.expect(']')?;
                            }
                            decls.push(more);
                        }
                        self.expect(';')?;
                        out.extend(decls.into_iter().map(Stmt::Decl));
                    }
                },
                Tok::Ident(name) if *self.peek_at(1) == Tok::Punct(':') => {
                    self.pos += 2;
                    out.push(Stmt::Label(name));
                }
                Tok::Punct('@') => {
                    self.pos += 1;
                    let neg = self.eat_punct('!');
                    let p = self.ident()?;
                    let mut i = self.inst(line)?;
                    i.guard = Some((p, neg));
                    out.push(Stmt::Inst(i));
                }
                Tok::Ident(_) => {
                    let i = self.inst(line)?;
                    out.push(Stmt::Inst(i));
                }
                t => return self.err(format!("unexpected {}", describe(&t))),
            }
        }
    }

    fn inst(&mut self, line: u32) -> Result<Inst, PtxError> {
        let mut text = self.ident()?;
        let opcode = Opcode::parse(&text);
        let mut mods = Mods::default();
        while let Tok::Dir(d) = self.peek() {
            mods.push(d);
            text.push('.');
            text.push_str(d);
            self.pos += 1;
        }
        let mut args = Vec::new();
        let bulk = opcode == Opcode::Cp && (mods.bulk || mods.has(Mod::Reduce));
        if opcode.operands_unparsed() || bulk {
            // Rejected later as not supported; their operand syntax is not worth parsing.
            self.skip_to_semicolon();
            return Ok(Inst {
                line,
                guard: None,
                opcode,
                mods,
                text,
                args,
            });
        }
        if !self.is_punct(';') {
            loop {
                args.push(self.operand(0)?);
                if self.eat_punct(';') {
                    break;
                }
                self.expect(',')?;
            }
        } else {
            self.pos += 1;
        }
        Ok(Inst {
            line,
            guard: None,
            opcode,
            mods,
            text,
            args,
        })
    }

    fn name_operand(&mut self) -> Result<String, PtxError> {
        let mut n = self.ident()?;
        // %tid.x and friends.
        if n.starts_with('%') {
            if let Tok::Dir(d) = self.peek().clone() {
                if matches!(d.as_str(), "x" | "y" | "z" | "w") {
                    self.pos += 1;
                    n.push('.');
                    n.push_str(&d);
                }
            }
        }
        Ok(n)
    }

    fn operand(&mut self, depth: u32) -> Result<Opnd, PtxError> {
        if depth > 4 {
            return self.err("operand nested too deeply");
        }
        match self.peek().clone() {
            Tok::Punct('[') => {
                self.pos += 1;
                let mut base = None;
                let mut imm = 0i64;
                match self.peek().clone() {
                    Tok::Ident(_) => base = Some(self.name_operand()?),
                    _ => imm = lit_int(self.literal()?),
                }
                loop {
                    if self.eat_punct('+') {
                        imm = imm.wrapping_add(lit_int(self.literal()?));
                    } else if self.eat_punct('-') {
                        imm = imm.wrapping_sub(lit_int(self.literal()?));
                    } else {
                        break;
                    }
                }
                self.expect(']')?;
                Ok(Opnd::Addr { base, imm })
            }
            Tok::Punct('{') => {
                self.pos += 1;
                let mut v = Vec::new();
                loop {
                    v.push(self.operand(depth + 1)?);
                    if self.eat_punct('}') {
                        return Ok(Opnd::Vec(v));
                    }
                    self.expect(',')?;
                }
            }
            Tok::Punct('(') => {
                self.pos += 1;
                let mut v = Vec::new();
                if self.eat_punct(')') {
                    return Ok(Opnd::List(v));
                }
                loop {
                    v.push(self.operand(depth + 1)?);
                    if self.eat_punct(')') {
                        return Ok(Opnd::List(v));
                    }
                    self.expect(',')?;
                }
            }
            Tok::Punct('!') => {
                self.pos += 1;
                Ok(Opnd::Not(Box::new(self.operand(depth + 1)?)))
            }
            Tok::Ident(n) if n == "_" => {
                self.pos += 1;
                Ok(Opnd::Sink)
            }
            // PTX's predefined constant: the warp size, as an immediate operand.
            Tok::Ident(n) if n == "WARP_SZ" => {
                self.pos += 1;
                Ok(Opnd::Lit(Lit::Int(32)))
            }
            Tok::Ident(_) => {
                let n = self.name_operand()?;
                if self.eat_punct('|') {
                    let p = self.ident()?;
                    return Ok(Opnd::Pipe(n, p));
                }
                if self.eat_punct('+') {
                    // sym+imm as a value (mov.u64 %rd, sym+8)
                    let imm = lit_int(self.literal()?);
                    return Ok(Opnd::SymOff(n, imm));
                }
                Ok(Opnd::Name(n))
            }
            _ => Ok(Opnd::Lit(self.literal()?)),
        }
    }
}

fn lit_int(l: Lit) -> i64 {
    match l {
        Lit::Int(v) => v as i64,
        Lit::F32(v) => v as i64,
        Lit::F64(v) => v as i64,
        Lit::Float(v) => v as i64,
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Dir(s) => format!("`.{s}`"),
        Tok::Int(v) => format!("`{v}`"),
        Tok::F32(v) => format!("`0f{v:08X}`"),
        Tok::F64(v) => format!("`0d{v:016X}`"),
        Tok::Float(v) => format!("`{v}`"),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::Punct(c) => format!("`{c}`"),
        Tok::Eof => "end of input".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_small_kernel() {
        let src = r#"
.version 8.8
.target sm_80
.address_size 64
.global .align 4 .b8 tbl[8] = {1, 2, 3};
.visible .entry k(.param .u64 k_param_0, .param .align 8 .b8 k_param_1[16])
.maxntid 256, 1, 1
{
    .reg .pred %p<2>;
    .reg .b32 %r<5>;
    .reg .b64 %rd<3>;
    ld.param.u64 %rd1, [k_param_0];
    mov.u32 %r1, %tid.x;
    setp.lt.u32 %p1, %r1, 0x10;
    @!%p1 bra $L__BB0_2;
    { .reg .b32 tmp; add.s32 tmp, %r1, -1; }
    st.global.v2.u32 [%rd1+8], {%r1, %r2};
$L__BB0_2:
    ret;
}
"#;
        let ast = parse(src).unwrap();
        assert_eq!(ast.items.len(), 2);
        let Item::Func(f) = &ast.items[1] else {
            panic!()
        };
        assert_eq!(f.params.len(), 2);
        assert_eq!(f.max_threads, Some(256));
        let body = f.body.as_ref().unwrap();
        assert!(body
            .iter()
            .any(|s| matches!(s, Stmt::Label(l) if l == "$L__BB0_2")));
    }

    #[test]
    fn errors_carry_line_numbers() {
        let e = parse(".version 8.0\n.entry k()\n{\n  add.s32 %r1, , ;\n}\n").unwrap_err();
        assert!(matches!(e, PtxError::InvalidPtx { line: 4, .. }), "{e:?}");
    }
}
