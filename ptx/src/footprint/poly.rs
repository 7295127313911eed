//! Symbolic integers: polynomials with `i128` coefficients over the atoms a kernel's addresses
//! are built from (parameter words, the geometry special registers, loop iteration counts),
//! and the interval arithmetic that bounds them once the launch makes most atoms numbers.

use std::collections::BTreeMap;

/// An unknown the analysis keeps symbolic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// The little-endian word of `size` bytes at `offset` in the parameter buffer (4-byte and
    /// 8-byte words are read as signed, smaller ones as unsigned).
    Param {
        offset: u32,
        size: u32,
    },
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    /// Iteration index of the loop whose header is instruction `.0`: 0 on entry, one more
    /// each time a back edge is taken.
    Loop(u32),
    /// Uniform value `.0` of the kernel's table ([`super::Uniform`]): a function of parameter
    /// words, `%ntid`, `%nctaid` and earlier uniform values, computed exactly at launch.
    Uni(u32),
}

impl Atom {
    /// Whether the atom is known once the launch is (no block, thread or loop index).
    pub fn uniform(self) -> bool {
        matches!(
            self,
            Atom::Param { .. } | Atom::Ntid(_) | Atom::Nctaid(_) | Atom::Uni(_)
        )
    }
}

/// Most monomials and the highest degree a polynomial may have; past them it becomes unknown,
/// which bounds the analysis' work.
const MAX_TERMS: usize = 24;
const MAX_DEGREE: usize = 4;

/// A polynomial: monomial (sorted atoms; empty for the constant) to non-zero coefficient.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Poly(pub BTreeMap<Vec<Atom>, i128>);

impl Poly {
    pub fn constant(c: i128) -> Poly {
        let mut m = BTreeMap::new();
        if c != 0 {
            m.insert(Vec::new(), c);
        }
        Poly(m)
    }

    pub fn atom(a: Atom) -> Poly {
        let mut m = BTreeMap::new();
        m.insert(vec![a], 1);
        Poly(m)
    }

    /// The constant, when the polynomial has no atoms.
    pub fn as_const(&self) -> Option<i128> {
        match self.0.len() {
            0 => Some(0),
            1 => self.0.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// The constant term.
    pub fn as_const_part(&self) -> i128 {
        self.0.get(&Vec::new()).copied().unwrap_or(0)
    }

    /// The constant term and the rest.
    pub fn as_const_split(&self) -> (i128, Poly) {
        let mut r = self.clone();
        let c = r.0.remove(&Vec::new()).unwrap_or(0);
        (c, r)
    }

    pub fn atoms(&self) -> impl Iterator<Item = Atom> + '_ {
        self.0.keys().flat_map(|m| m.iter().copied())
    }

    /// Whether every atom is [`Atom::uniform`].
    pub fn uniform(&self) -> bool {
        self.atoms().all(Atom::uniform)
    }

    pub fn mentions(&self, a: Atom) -> bool {
        self.atoms().any(|x| x == a)
    }

    fn add_term(&mut self, m: Vec<Atom>, c: i128) -> Option<()> {
        let e = self.0.entry(m).or_insert(0);
        *e = e.checked_add(c)?;
        if *e == 0 {
            self.0.retain(|_, v| *v != 0);
        }
        Some(())
    }

    fn checked(self) -> Option<Poly> {
        (self.0.len() <= MAX_TERMS && self.0.keys().all(|m| m.len() <= MAX_DEGREE)).then_some(self)
    }

    pub fn add(&self, o: &Poly) -> Option<Poly> {
        let mut r = self.clone();
        for (m, c) in &o.0 {
            r.add_term(m.clone(), *c)?;
        }
        r.checked()
    }

    pub fn sub(&self, o: &Poly) -> Option<Poly> {
        self.add(&o.scale(-1)?)
    }

    pub fn scale(&self, k: i128) -> Option<Poly> {
        let mut r = Poly::default();
        for (m, c) in &self.0 {
            r.add_term(m.clone(), c.checked_mul(k)?)?;
        }
        Some(r)
    }

    pub fn mul(&self, o: &Poly) -> Option<Poly> {
        let mut r = Poly::default();
        for (m1, c1) in &self.0 {
            for (m2, c2) in &o.0 {
                let mut m = m1.clone();
                m.extend_from_slice(m2);
                m.sort_unstable();
                if m.len() > MAX_DEGREE {
                    return None;
                }
                r.add_term(m, c1.checked_mul(*c2)?)?;
            }
        }
        r.checked()
    }

    /// Splits along `a` when the polynomial is `c + a * s` with `a` in neither `c` nor `s`.
    pub fn linear_in(&self, a: Atom) -> Option<(Poly, Poly)> {
        let (mut c, mut s) = (Poly::default(), Poly::default());
        for (m, k) in &self.0 {
            let n = m.iter().filter(|x| **x == a).count();
            match n {
                0 => c.add_term(m.clone(), *k)?,
                1 => {
                    let rest: Vec<Atom> = m.iter().copied().filter(|x| *x != a).collect();
                    s.add_term(rest, *k)?
                }
                _ => return None,
            }
        }
        Some((c, s))
    }

    /// Replaces the atoms `f` knows by their values.
    pub fn subst(&self, f: &dyn Fn(Atom) -> Option<i128>) -> Option<Poly> {
        let mut r = Poly::default();
        for (m, c) in &self.0 {
            let mut k = *c;
            let mut rest = Vec::new();
            for a in m {
                match f(*a) {
                    Some(v) => k = k.checked_mul(v)?,
                    None => rest.push(*a),
                }
            }
            r.add_term(rest, k)?;
        }
        Some(r)
    }

    /// Smallest and largest value when every atom ranges independently over `f(atom)`.
    pub fn range(&self, f: &dyn Fn(Atom) -> Option<(i128, i128)>) -> Option<(i128, i128)> {
        let (mut lo, mut hi) = (0i128, 0i128);
        for (m, c) in &self.0 {
            let (mut a, mut b) = (*c, *c);
            for x in m {
                let (p, q) = f(*x)?;
                let cands = [
                    a.checked_mul(p)?,
                    a.checked_mul(q)?,
                    b.checked_mul(p)?,
                    b.checked_mul(q)?,
                ];
                a = *cands.iter().min()?;
                b = *cands.iter().max()?;
            }
            lo = lo.checked_add(a)?;
            hi = hi.checked_add(b)?;
        }
        Some((lo, hi))
    }
}

/// `ceil(a / b)` for `b > 0`.
pub fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) != 0 {
        q + 1
    } else {
        q
    }
}
