//! Coverage as sets, as Lighthouse composes it: `A | B` (either ran: blocks merged, counts
//! added, so merging is associative and commutative), `A & B` (bytes both ran) and `A - B`
//! (bytes A ran that B did not), with `&` binding tighter than `|` and `-`, and parentheses.
//! Intersections and differences are byte sets: their blocks are the maximal covered runs.

use crate::drcov::{BlockKey, Coverage};
use crate::CovError;
use std::collections::BTreeMap;

/// A set expression over runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A run: a drcov file, or a directory of them.
    Run(String),
    /// Either ran.
    Union(Box<Expr>, Box<Expr>),
    /// Both ran.
    Intersection(Box<Expr>, Box<Expr>),
    /// The left ran, the right did not.
    Difference(Box<Expr>, Box<Expr>),
}

/// Splits words into tokens: `(`, `)`, `|`, `&`, a lone `-`, and run names.
fn tokens(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for w in words.iter().flat_map(|w| w.split_whitespace()) {
        let mut name = String::new();
        for c in w.chars() {
            if "()|&".contains(c) {
                if !name.is_empty() {
                    out.push(std::mem::take(&mut name));
                }
                out.push(c.to_string());
            } else {
                name.push(c);
            }
        }
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn error(&self, why: &str) -> CovError {
        CovError::Expression(format!("{why} at {:?}", self.tokens[self.pos.min(self.tokens.len())..].join(" ")))
    }

    /// union := term (('|' | '-') term)*
    fn union(&mut self) -> Result<Expr, CovError> {
        let mut left = self.term()?;
        while let Some(op @ ("|" | "-")) = self.peek() {
            let union = op == "|";
            self.pos += 1;
            let right = Box::new(self.term()?);
            left = if union { Expr::Union(Box::new(left), right) } else { Expr::Difference(Box::new(left), right) };
        }
        Ok(left)
    }

    /// term := atom ('&' atom)*
    fn term(&mut self) -> Result<Expr, CovError> {
        let mut left = self.atom()?;
        while self.peek() == Some("&") {
            self.pos += 1;
            left = Expr::Intersection(Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
    }

    /// atom := run | '(' union ')'
    fn atom(&mut self) -> Result<Expr, CovError> {
        match self.peek() {
            Some("(") => {
                self.pos += 1;
                let e = self.union()?;
                if self.peek() != Some(")") {
                    return Err(self.error("expected )"));
                }
                self.pos += 1;
                Ok(e)
            }
            Some(t) if !["|", "&", "-", ")"].contains(&t) => {
                let run = Expr::Run(t.to_string());
                self.pos += 1;
                Ok(run)
            }
            _ => Err(self.error("expected a run")),
        }
    }
}

impl Expr {
    /// Parses `words` (joined by spaces: `["a.log", "|", "b.log"]` or `["a.log | b.log"]`).
    pub fn parse(words: &[String]) -> Result<Expr, CovError> {
        let mut p = Parser { tokens: tokens(words), pos: 0 };
        let e = p.union()?;
        if p.pos != p.tokens.len() {
            return Err(p.error("unexpected"));
        }
        Ok(e)
    }

    /// The coverage of the expression, each run read by `load`.
    pub fn eval(&self, load: &mut dyn FnMut(&str) -> Result<Coverage, CovError>) -> Result<Coverage, CovError> {
        Ok(match self {
            Expr::Run(name) => load(name)?,
            Expr::Union(a, b) => union(a.eval(load)?, &b.eval(load)?),
            Expr::Intersection(a, b) => bytewise(&a.eval(load)?, &b.eval(load)?, |x, y| x && y),
            Expr::Difference(a, b) => bytewise(&a.eval(load)?, &b.eval(load)?, |x, y| x && !y),
        })
    }
}

/// `a` and `b` merged: every block of either, counts added.
pub fn union(mut a: Coverage, b: &Coverage) -> Coverage {
    for (path, blocks) in b {
        let mine = a.entry(path.clone()).or_default();
        for (key, count) in blocks {
            *mine.entry(*key).or_insert(0) += count;
        }
    }
    a
}

/// Module offsets `[start, end)` that `blocks` cover, as sorted disjoint runs.
fn runs(blocks: Option<&BTreeMap<BlockKey, u64>>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(start, size) in blocks.into_iter().flat_map(|b| b.keys()) {
        let end = start + size as u64;
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// The bytes for which `keep(in a, in b)` holds, as blocks (maximal runs, at most 65,535
/// bytes each) that ran once.
fn bytewise(a: &Coverage, b: &Coverage, keep: fn(bool, bool) -> bool) -> Coverage {
    let mut out = Coverage::new();
    for path in a.keys().chain(b.keys()) {
        let (ra, rb) = (runs(a.get(path)), runs(b.get(path)));
        let mut cuts: Vec<u64> = ra.iter().chain(&rb).flat_map(|&(s, e)| [s, e]).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let inside = |r: &[(u64, u64)], x: u64| {
            let i = r.partition_point(|p| p.1 <= x);
            i < r.len() && r[i].0 <= x
        };
        let mut kept: Vec<(u64, u64)> = Vec::new();
        for w in cuts.windows(2) {
            if keep(inside(&ra, w[0]), inside(&rb, w[0])) {
                match kept.last_mut() {
                    Some(last) if last.1 == w[0] => last.1 = w[1],
                    _ => kept.push((w[0], w[1])),
                }
            }
        }
        if kept.is_empty() {
            continue;
        }
        let blocks = out.entry(path.clone()).or_default();
        for (mut s, e) in kept {
            while s < e {
                let size = (e - s).min(u16::MAX as u64);
                blocks.insert((s, size as u16), 1);
                s += size;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cov(blocks: &[(u64, u16, u64)]) -> Coverage {
        Coverage::from([("/m".to_string(), blocks.iter().map(|&(o, s, c)| ((o, s), c)).collect())])
    }

    fn eval(expr: &str, runs: &[(&str, Coverage)]) -> Coverage {
        let e = Expr::parse(&[expr.to_string()]).unwrap();
        e.eval(&mut |name| Ok(runs.iter().find(|r| r.0 == name).unwrap().1.clone())).unwrap()
    }

    #[test]
    fn precedence_and_parentheses() {
        let p = |s: &str| Expr::parse(&[s.to_string()]).unwrap();
        let run = |n: &str| Box::new(Expr::Run(n.into()));
        assert_eq!(p("a | b & c"), Expr::Union(run("a"), Box::new(Expr::Intersection(run("b"), run("c")))));
        assert_eq!(p("(a|b) - c"), Expr::Difference(Box::new(Expr::Union(run("a"), run("b"))), run("c")));
        assert_eq!(p("x-y.log"), Expr::Run("x-y.log".into()));
        assert!(Expr::parse(&["a |".to_string()]).is_err());
        assert!(Expr::parse(&["(a".to_string()]).is_err());
    }

    #[test]
    fn sets_of_bytes() {
        let a = cov(&[(0, 10, 2)]);
        let b = cov(&[(4, 2, 1), (8, 4, 1)]);
        let runs = [("a", a.clone()), ("b", b.clone())];
        assert_eq!(eval("a & b", &runs), cov(&[(4, 2, 1), (8, 2, 1)]));
        assert_eq!(eval("a - b", &runs), cov(&[(0, 4, 1), (6, 2, 1)]));
        assert_eq!(eval("b - a", &runs), cov(&[(10, 2, 1)]));
        assert_eq!(eval("a | b", &runs), cov(&[(0, 10, 2), (4, 2, 1), (8, 4, 1)]));
        assert!(eval("a - a", &runs).is_empty());
    }

    #[test]
    fn merging_is_associative_and_commutative() {
        let runs = [("a", cov(&[(0, 4, 1)])), ("b", cov(&[(0, 4, 3), (8, 1, 1)])), ("c", cov(&[(8, 1, 5), (20, 2, 1)]))];
        let left = eval("(a | b) | c", &runs);
        assert_eq!(left, eval("a | (b | c)", &runs));
        assert_eq!(left, eval("c | b | a", &runs));
        assert_eq!(left, cov(&[(0, 4, 4), (8, 1, 6), (20, 2, 1)]));
    }
}
