//! A small JSON reader and the few typed extractions the SDK needs.
//!
//! serde_json's generic deserializers (one monomorphised state machine per
//! type, float formatting/parsing, error formatting) were the largest part of
//! the wasm. The SDK only reads three server documents (event-plane frames,
//! token claims, `{code, message}` error bodies) whose numbers are all
//! integers, so a tree reader plus hand-written field lookups does the same
//! job with a fraction of the code. Semantics follow serde's for those
//! types: unknown fields are ignored, defaulted fields may be absent, a
//! missing required field or a wrong type rejects the whole document.

/// A parsed JSON value. Numbers keep only what the SDK can use: an integer
/// (`Int`) or "some other number" (`Num`, rejected wherever an integer is
/// expected, as serde rejects `1.5` for an `i64`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Num,
    Str(String),
    Arr(Vec<Value>),
    Obj(Vec<(String, Value)>),
}

/// Nesting deeper than this is refused (serde_json's limit too), so a hostile
/// frame cannot exhaust the stack.
const MAX_DEPTH: u32 = 128;

/// Parses a whole document; `None` when it is not valid JSON (trailing
/// non-whitespace included).
pub fn parse(text: &[u8]) -> Option<Value> {
    let mut r = Reader { s: text, i: 0 };
    let v = r.value(0)?;
    r.ws();
    (r.i == text.len()).then_some(v)
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> Option<()> {
        let end = self.i.checked_add(lit.len())?;
        (self.s.get(self.i..end)? == lit).then(|| self.i = end)
    }

    fn value(&mut self, depth: u32) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        Some(match self.peek()? {
            b'n' => self.eat(b"null").map(|()| Value::Null)?,
            b't' => self.eat(b"true").map(|()| Value::Bool(true))?,
            b'f' => self.eat(b"false").map(|()| Value::Bool(false))?,
            b'"' => Value::Str(self.string()?),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                } else {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b']' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                Value::Arr(items)
            }
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        if self.peek()? != b'"' {
                            return None;
                        }
                        let key = self.string()?;
                        self.ws();
                        self.eat(b":")?;
                        fields.push((key, self.value(depth + 1)?));
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b'}' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                Value::Obj(fields)
            }
            _ => self.number()?,
        })
    }

    /// JSON number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<Value> {
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        let start = self.i;
        // u64 rather than i128 arithmetic: i128 multiplication pulls a
        // compiler-builtins routine into the wasm.
        let mut int: Option<u64> = Some(0);
        while let Some(d @ b'0'..=b'9') = self.peek() {
            int = int
                .and_then(|n| n.checked_mul(10))
                .and_then(|n| n.checked_add(u64::from(d - b'0')));
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && self.s[start] == b'0') {
            return None;
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integral = false;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            integral = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits()?;
        }
        Some(match int {
            Some(n) if integral => Value::Int(if neg { -i128::from(n) } else { i128::from(n) }),
            _ => Value::Num,
        })
    }

    fn digits(&mut self) -> Option<()> {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut n = 0;
        for _ in 0..4 {
            let d = char::from(self.peek()?).to_digit(16)?;
            n = n * 16 + d;
            self.i += 1;
        }
        Some(n)
    }

    /// A string literal starting at the opening quote.
    fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let c = match e {
                        b'"' | b'\\' | b'/' => e,
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp) {
                                self.eat(b"\\u")?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                            }
                            let mut buf = [0; 4];
                            out.extend_from_slice(
                                char::from_u32(cp)?.encode_utf8(&mut buf).as_bytes(),
                            );
                            continue;
                        }
                        _ => return None,
                    };
                    out.push(c);
                }
                // Control characters must be escaped.
                0..=0x1F => return None,
                _ => out.push(b),
            }
        }
        String::from_utf8(out).ok()
    }
}

impl Value {
    /// The field `key` of an object (`None` when absent or not an object).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The fields of an object.
    pub fn fields(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Obj(fields) => Some(fields),
            _ => None,
        }
    }
}

/// Typed field access with serde's rules: `req_*` fail when the field is
/// absent or has the wrong type; `opt_*` give the default when it is absent
/// but still fail on a wrong type.
pub struct Fields<'a>(pub &'a Value);

impl<'a> Fields<'a> {
    /// `Some` only for a JSON object.
    pub fn of(v: &'a Value) -> Option<Self> {
        v.fields().map(|_| Fields(v))
    }

    pub fn req_str(&self, key: &str) -> Option<String> {
        match self.0.get(key)? {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn opt_str(&self, key: &str) -> Option<String> {
        match self.0.get(key) {
            None => Some(String::new()),
            Some(_) => self.req_str(key),
        }
    }

    pub fn req_bool(&self, key: &str) -> Option<bool> {
        match self.0.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn opt_bool(&self, key: &str) -> Option<bool> {
        match self.0.get(key) {
            None => Some(false),
            Some(_) => self.req_bool(key),
        }
    }

    pub fn req_int(&self, key: &str) -> Option<i128> {
        match self.0.get(key)? {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn opt_int(&self, key: &str) -> Option<i128> {
        match self.0.get(key) {
            None => Some(0),
            Some(_) => self.req_int(key),
        }
    }

    /// An `Option<String>` field: absent or `null` is `None`.
    pub fn opt_nullable_str(&self, key: &str) -> Option<Option<String>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(Value::Str(s)) => Some(Some(s.clone())),
            Some(_) => None,
        }
    }

    /// An array field (`default` when absent).
    pub fn opt_arr(&self, key: &str) -> Option<&'a [Value]> {
        match self.0.get(key) {
            None => Some(&[]),
            Some(Value::Arr(items)) => Some(items),
            Some(_) => None,
        }
    }

    /// An object of strings (`default` when absent).
    pub fn opt_str_map(&self, key: &str) -> Option<std::collections::BTreeMap<String, String>> {
        let Some(v) = self.0.get(key) else {
            return Some(Default::default());
        };
        // Inserted one by one: collecting into a BTreeMap sorts first,
        // which links the standard library's (large) sort into the wasm.
        let mut map = std::collections::BTreeMap::new();
        for (k, v) in v.fields()? {
            let Value::Str(s) = v else { return None };
            map.insert(k.clone(), s.clone());
        }
        Some(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        let v =
            parse(br#" {"a":[1,-2,3.5,1e3,true,false,null,"x\"\u00e9\ud83d\ude00\n"],"b":{}} "#);
        assert_eq!(
            v,
            Some(Value::Obj(vec![
                (
                    "a".into(),
                    Value::Arr(vec![
                        Value::Int(1),
                        Value::Int(-2),
                        Value::Num,
                        Value::Num,
                        Value::Bool(true),
                        Value::Bool(false),
                        Value::Null,
                        Value::Str("x\"é😀\n".into()),
                    ])
                ),
                ("b".into(), Value::Obj(vec![])),
            ]))
        );
    }

    #[test]
    fn rejects_invalid_documents() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "-",
            "1.",
            "1e",
            "tru",
            "\"a",
            "\"\u{1}\"",
            "\"\\x\"",
            "\"\\ud800\"",
            "{} x",
            "{a:1}",
            "[1 2]",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(
            parse(b"[18446744073709551615,-18446744073709551615,18446744073709551616]"),
            Some(Value::Arr(vec![
                Value::Int(u64::MAX.into()),
                Value::Int(-i128::from(u64::MAX)),
                Value::Num,
            ]))
        );
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(parse(deep.as_bytes()), None);
    }
}
