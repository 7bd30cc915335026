//! JSON from arbitrary bytes: objects whose keys mostly come from the
//! format's own dictionary, values mostly from its typical strings, so a
//! generated document reaches the checks after "is it JSON" and "is it an
//! object with these keys".

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

/// The words of one format.
pub struct Dict {
    /// Object keys, at every level.
    pub keys: &'static [&'static str],
    /// String values.
    pub strings: &'static [&'static str],
}

/// Deepest nesting generated.
pub const MAX_DEPTH: u32 = 6;

/// A key: from the dictionary (mostly) or any string.
pub fn key(u: &mut Unstructured, d: &Dict) -> Result<String> {
    if !d.keys.is_empty() && u.ratio(7, 8)? {
        Ok(u.choose(d.keys)?.to_string())
    } else {
        u.arbitrary()
    }
}

/// A string value: from the dictionary (mostly), a dictionary word with
/// something appended, or any string.
pub fn string(u: &mut Unstructured, d: &Dict) -> Result<String> {
    Ok(match u.int_in_range(0..=7)? {
        0 => u.arbitrary()?,
        1 if !d.strings.is_empty() => format!("{}{}", u.choose(d.strings)?, u.arbitrary::<String>()?),
        _ if !d.strings.is_empty() => u.choose(d.strings)?.to_string(),
        _ => u.arbitrary()?,
    })
}

/// Any JSON value, at most `depth` levels deep.
pub fn value(u: &mut Unstructured, d: &Dict, depth: u32) -> Result<Value> {
    let top = if depth == 0 { 5 } else { 8 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.int_in_range(-1i64..=70000)?),
        3 => match u.int_in_range(0..=2)? {
            0 => Value::from(u.arbitrary::<i64>()?),
            1 => Value::from(u.arbitrary::<u64>()?),
            _ => Number::from_f64(u.arbitrary()?).map(Value::Number).unwrap_or(Value::Null),
        },
        4 | 5 => Value::String(string(u, d)?),
        6 => {
            let n = u.int_in_range(0..=4)?;
            let mut a = Vec::with_capacity(n);
            for _ in 0..n {
                a.push(value(u, d, depth - 1)?);
            }
            Value::Array(a)
        }
        _ => Value::Object(object(u, d, depth - 1)?),
    })
}

/// An object of up to 6 members.
pub fn object(u: &mut Unstructured, d: &Dict, depth: u32) -> Result<Map<String, Value>> {
    let n = u.int_in_range(0..=6)?;
    let mut m = Map::new();
    for _ in 0..n {
        let k = key(u, d)?;
        let v = value(u, d, depth)?;
        m.insert(k, v);
    }
    Ok(m)
}

/// An array of up to `max` objects.
pub fn objects(u: &mut Unstructured, d: &Dict, depth: u32, max: usize) -> Result<Value> {
    let n = u.int_in_range(0..=max)?;
    let mut a = Vec::with_capacity(n);
    for _ in 0..n {
        a.push(Value::Object(object(u, d, depth)?));
    }
    Ok(Value::Array(a))
}

/// The document as bytes: compact, pretty, or with a few bytes of the
/// input spliced in (a syntax error somewhere inside).
pub fn render(u: &mut Unstructured, v: &Value) -> Result<Vec<u8>> {
    let mut b = match u.int_in_range(0..=3)? {
        0 => serde_json::to_vec_pretty(v).unwrap_or_default(),
        _ => serde_json::to_vec(v).unwrap_or_default(),
    };
    if u.ratio(1, 16)? && !b.is_empty() {
        let at = u.choose_index(b.len())?;
        let junk: Vec<u8> = u.arbitrary()?;
        b.splice(at..at, junk.into_iter().take(8));
    }
    Ok(b)
}

/// The input as the document itself (first byte even) or as the choices
/// that build one with `build` (odd): mutated JSON and generated JSON in
/// one corpus.
pub fn bytes_or(data: &[u8], build: impl FnOnce(&mut Unstructured) -> Result<Value>) -> Vec<u8> {
    match data.split_first() {
        Some((m, rest)) if m & 1 == 1 => {
            let mut u = Unstructured::new(rest);
            match build(&mut u) {
                Ok(v) => render(&mut u, &v).unwrap_or_else(|_| serde_json::to_vec(&v).unwrap_or_default()),
                Err(_) => Vec::new(),
            }
        }
        Some((_, rest)) => rest.to_vec(),
        None => Vec::new(),
    }
}
