//! The small subset of Python literals that `.npy` headers use: a dict of strings,
//! booleans, non-negative integers, tuples and lists. Parsing is bounded (input length
//! is capped by the caller, nesting by [`MAX_NESTING`]) and never panics; writing
//! produces what Python's `repr` would, so headers match NumPy's byte for byte.

use crate::{Error, Result};

/// Deepest nesting of containers accepted by [`parse`].
pub const MAX_NESTING: usize = 32;

/// A parsed literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `'text'` or `"text"`.
    Str(String),
    /// A non-negative integer (an `L` suffix, as Python 2 wrote, is accepted).
    Int(u64),
    /// `True` / `False`.
    Bool(bool),
    /// `None`.
    None,
    /// `(a, b)`, `(a,)`, `()`.
    Tuple(Vec<Value>),
    /// `[a, b]`.
    List(Vec<Value>),
    /// `{k: v, ...}` in source order.
    Dict(Vec<(Value, Value)>),
}

/// Parse exactly one literal from `text`, allowing surrounding whitespace.
pub fn parse(text: &str) -> Result<Value> {
    let mut p = Parser {
        chars: text.char_indices().peekable(),
        text,
    };
    let v = p.value(0)?;
    p.skip_ws();
    match p.chars.peek() {
        None => Ok(v),
        Some(&(at, _)) => Err(p.err_at(at, "unexpected text after the literal")),
    }
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    text: &'a str,
}

impl Parser<'_> {
    fn err_at(&self, at: usize, what: &str) -> Error {
        Error::corruption(
            u64::try_from(at).unwrap_or(u64::MAX),
            format!("Python literal: {what}"),
        )
    }

    fn here(&mut self) -> usize {
        self.chars.peek().map_or(self.text.len(), |&(i, _)| i)
    }

    fn skip_ws(&mut self) {
        while matches!(self.chars.peek(), Some((_, ' ' | '\t' | '\n' | '\r'))) {
            self.chars.next();
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        self.skip_ws();
        let at = self.here();
        if depth > MAX_NESTING {
            return Err(self.err_at(at, "nested too deeply"));
        }
        match self.chars.peek().map(|&(_, c)| c) {
            None => Err(self.err_at(at, "unexpected end")),
            Some(q @ ('\'' | '"')) => {
                self.chars.next();
                self.string(q).map(Value::Str)
            }
            Some('(') => {
                self.chars.next();
                let (items, trailing_comma) = self.seq(')', depth)?;
                // `(x)` is just x in Python; NumPy never writes it, so we reject it.
                if items.len() == 1 && !trailing_comma {
                    return Err(self.err_at(at, "parenthesized value is not a tuple"));
                }
                Ok(Value::Tuple(items))
            }
            Some('[') => {
                self.chars.next();
                Ok(Value::List(self.seq(']', depth)?.0))
            }
            Some('{') => {
                self.chars.next();
                self.dict(depth)
            }
            Some(c) if c.is_ascii_digit() => self.int(),
            Some(c) if c.is_ascii_alphabetic() => {
                let word = self.word();
                match word.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::None),
                    _ => Err(self.err_at(at, &format!("unknown name {word:?}"))),
                }
            }
            Some(c) => Err(self.err_at(at, &format!("unexpected character {c:?}"))),
        }
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(&(_, c)) = self.chars.peek() {
            if !c.is_ascii_alphanumeric() || w.len() > 16 {
                break;
            }
            w.push(c);
            self.chars.next();
        }
        w
    }

    fn int(&mut self) -> Result<Value> {
        let at = self.here();
        let mut v: u64 = 0;
        while let Some(&(_, c)) = self.chars.peek() {
            let Some(d) = c.to_digit(10) else { break };
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d)))
                .ok_or_else(|| self.err_at(at, "integer too large"))?;
            self.chars.next();
        }
        if matches!(self.chars.peek(), Some((_, 'L'))) {
            self.chars.next();
        }
        Ok(Value::Int(v))
    }

    fn string(&mut self, quote: char) -> Result<String> {
        let start = self.here();
        let mut s = String::new();
        loop {
            let Some((at, c)) = self.chars.next() else {
                return Err(self.err_at(start, "unterminated string"));
            };
            match c {
                c if c == quote => return Ok(s),
                '\n' => return Err(self.err_at(at, "newline in string")),
                '\\' => {
                    let Some((_, e)) = self.chars.next() else {
                        return Err(self.err_at(at, "unterminated escape"));
                    };
                    match e {
                        '\\' | '\'' | '"' => s.push(e),
                        'n' => s.push('\n'),
                        'r' => s.push('\r'),
                        't' => s.push('\t'),
                        'x' => s.push(self.hex_escape(2, at)?),
                        'u' => s.push(self.hex_escape(4, at)?),
                        'U' => s.push(self.hex_escape(8, at)?),
                        _ => return Err(self.err_at(at, &format!("unsupported escape \\{e}"))),
                    }
                }
                c => s.push(c),
            }
        }
    }

    fn hex_escape(&mut self, digits: usize, at: usize) -> Result<char> {
        let mut v: u32 = 0;
        for _ in 0..digits {
            let d = self
                .chars
                .next()
                .and_then(|(_, c)| c.to_digit(16))
                .ok_or_else(|| self.err_at(at, "bad hex escape"))?;
            v = (v << 4) | d;
        }
        char::from_u32(v).ok_or_else(|| self.err_at(at, "escape is not a character"))
    }

    /// Items up to `close`; returns them and whether the last one had a trailing comma.
    fn seq(&mut self, close: char, depth: usize) -> Result<(Vec<Value>, bool)> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_ws();
            if let Some(&(_, c)) = self.chars.peek() {
                if c == close {
                    self.chars.next();
                    return Ok((items, trailing_comma));
                }
            }
            if !items.is_empty() && !trailing_comma {
                let at = self.here();
                return Err(self.err_at(at, &format!("expected ',' or {close:?}")));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            trailing_comma = matches!(self.chars.peek(), Some((_, ',')));
            if trailing_comma {
                self.chars.next();
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Value> {
        let mut items = Vec::new();
        let mut comma = true;
        loop {
            self.skip_ws();
            let at = self.here();
            match self.chars.peek() {
                Some((_, '}')) => {
                    self.chars.next();
                    return Ok(Value::Dict(items));
                }
                None => return Err(self.err_at(at, "unterminated dict")),
                _ if !comma => return Err(self.err_at(at, "expected ',' or '}'")),
                _ => {}
            }
            let key = self.value(depth + 1)?;
            self.skip_ws();
            let at = self.here();
            if !matches!(self.chars.next(), Some((_, ':'))) {
                return Err(self.err_at(at, "expected ':' in dict"));
            }
            let val = self.value(depth + 1)?;
            items.push((key, val));
            self.skip_ws();
            comma = matches!(self.chars.peek(), Some((_, ',')));
            if comma {
                self.chars.next();
            }
        }
    }
}

/// Append Python's `repr` of the string `s`.
pub fn write_str(out: &mut String, s: &str) {
    // Python's rule: single quotes, unless the text has a ' and no ".
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if u32::from(c) < 0x20 || (0x7f..=0xa0).contains(&u32::from(c)) || c == '\u{ad}' => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Append Python's `repr` of a tuple of integers: `()`, `(3,)`, `(3, 4)`.
pub fn write_int_tuple(out: &mut String, items: &[u64]) {
    out.push('(');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&v.to_string());
    }
    if items.len() == 1 {
        out.push(',');
    }
    out.push(')');
}
