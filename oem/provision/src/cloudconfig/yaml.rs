//! A small YAML tree with positions, built from `saphyr-parser` events.
//!
//! The tree keeps what the cloud-config reader needs and a generic YAML
//! value loses: the raw text and style of every scalar (so that `0644` can
//! be read as octal and `yes` as a boolean, as YAML 1.1 readers such as
//! PyYAML and Go's yaml do, while a quoted `'0644'` stays a string) and the
//! line and column of every node (for diagnostics).
//!
//! Limits that keep a hostile document from exhausting the agent: aliases
//! are expanded by copying, and the whole tree, copies included, may hold
//! at most [`MAX_NODES`] nodes and [`MAX_BYTES`] bytes of scalar text.
//! Nesting deeper than [`MAX_DEPTH`] is refused. Only the first document of
//! a stream is read.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;

/// Most nodes a document may expand to (aliases included).
pub const MAX_NODES: usize = 200_000;
/// Most bytes of scalar text a document may expand to (aliases included).
pub const MAX_BYTES: usize = 64 << 20;
/// Deepest nesting of sequences and mappings.
pub const MAX_DEPTH: usize = 256;

/// A position in the document, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl From<Span> for Pos {
    fn from(s: Span) -> Pos {
        Pos { line: s.start.line(), column: s.start.col() + 1 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `text` as written (escapes resolved); `plain` when unquoted and not
    /// a block scalar, i.e. open to YAML 1.1 resolution (null, bool, int);
    /// `binary` for a `!!binary` scalar.
    Scalar {
        text: String,
        plain: bool,
        binary: bool,
    },
    Seq(Vec<Node>),
    /// Entries in document order; `<<` merge keys already resolved.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
}

/// A document that is not YAML (or is too large), with where it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    /// The scalar's text, when it is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A plain `~`, `null`, `Null`, `NULL` or empty scalar (YAML 1.1 null).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true, binary: false } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The boolean a scalar stands for, read as YAML 1.1 readers (PyYAML,
    /// Go yaml) read it. Quoted `"true"`/`"false"` are accepted too, as
    /// cloud-init's `util.is_true` does.
    pub fn as_bool(&self) -> Option<bool> {
        let Kind::Scalar { text, plain, binary: false } = &self.kind else { return None };
        let t = text.as_str();
        match t {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            "yes" | "Yes" | "YES" | "on" | "On" | "ON" if *plain => Some(true),
            "no" | "No" | "NO" | "off" | "Off" | "OFF" if *plain => Some(false),
            _ => None,
        }
    }

    /// What kind of node this is, for messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    fn weight(&self) -> (usize, usize) {
        // Iterative, so that a deep tree cannot overflow the stack.
        let (mut nodes, mut bytes) = (0usize, 0usize);
        let mut todo = vec![self];
        while let Some(n) = todo.pop() {
            nodes += 1;
            match &n.kind {
                Kind::Scalar { text, .. } => bytes += text.len(),
                Kind::Seq(items) => todo.extend(items.iter()),
                Kind::Map(entries) => {
                    for (k, v) in entries {
                        todo.push(k);
                        todo.push(v);
                    }
                }
            }
        }
        (nodes, bytes)
    }
}

enum Frame {
    Seq { pos: Pos, anchor: usize, items: Vec<Node> },
    Map { pos: Pos, anchor: usize, entries: Vec<(Node, Node)>, key: Option<Node> },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    bytes: usize,
    root: Option<Node>,
}

impl Builder {
    fn charge(&mut self, nodes: usize, bytes: usize, pos: Pos) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES || self.bytes > MAX_BYTES {
            return Err(YamlError {
                pos,
                message: format!("the document expands to more than {MAX_NODES} nodes or {} MiB (aliases included)", MAX_BYTES >> 20),
            });
        }
        Ok(())
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    fn push(&mut self, frame: Frame, pos: Pos) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError { pos, message: format!("nesting deeper than {MAX_DEPTH} levels") });
        }
        self.charge(1, 0, pos)?;
        self.stack.push(frame);
        Ok(())
    }
}

/// Resolve `<<` merge keys (YAML 1.1, supported by PyYAML and Go yaml):
/// entries of the merged mapping(s) that the mapping does not set itself.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return entries;
    }
    let mut own = Vec::new();
    let mut merged = Vec::new();
    for (k, v) in entries {
        if is_merge_key(&k) {
            let sources = match v.kind {
                Kind::Map(m) => vec![m],
                Kind::Seq(items) => items
                    .into_iter()
                    .filter_map(|i| match i.kind {
                        Kind::Map(m) => Some(m),
                        _ => None,
                    })
                    .collect(),
                _ => vec![],
            };
            merged.extend(sources.into_iter().flatten());
        } else {
            own.push((k, v));
        }
    }
    for (k, v) in merged {
        let taken = own.iter().any(|(o, _)| o.scalar().is_some() && o.scalar() == k.scalar());
        if !taken {
            own.push((k, v));
        }
    }
    own
}

fn is_merge_key(k: &Node) -> bool {
    matches!(&k.kind, Kind::Scalar { text, plain: true, .. } if text == "<<")
}

fn is_binary_tag(tag: Option<&saphyr_parser::Tag>) -> bool {
    tag.is_some_and(|t| t.suffix == "binary" && (t.handle == "tag:yaml.org,2002:" || t.handle == "!!"))
}

fn is_str_tag(tag: Option<&saphyr_parser::Tag>) -> bool {
    tag.is_some_and(|t| t.suffix == "str" && (t.handle == "tag:yaml.org,2002:" || t.handle == "!!"))
}

/// Parse the first YAML document of `text`. `Ok(None)` when there is no
/// document at all (empty, or only comments).
pub fn load(text: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder { stack: Vec::new(), anchors: HashMap::new(), nodes: 0, bytes: 0, root: None };
    let mut in_document = false;
    while let Some(ev) = parser.next_event() {
        let (ev, span) = ev
            .map_err(|e| YamlError { pos: Pos { line: e.marker().line(), column: e.marker().col() + 1 }, message: e.info().to_string() })?;
        let pos = Pos::from(span);
        match ev {
            Event::Nothing | Event::StreamStart => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => in_document = true,
            Event::DocumentEnd => {
                if in_document {
                    // Only the first document counts (as yaml.Unmarshal in
                    // coreos-cloudinit); the rest is not even parsed.
                    break;
                }
            }
            Event::Alias(id) => {
                let Some((n, bytes)) = b.anchors.get(&id).map(Node::weight) else {
                    return Err(YamlError { pos, message: "alias to an unknown anchor".into() });
                };
                // Charged before the copy is made.
                b.charge(n, bytes, pos)?;
                let Some(mut node) = b.anchors.get(&id).cloned() else { continue };
                node.pos = pos;
                b.finish(node, 0);
            }
            Event::Scalar(value, style, anchor, tag) => {
                b.charge(1, value.len(), pos)?;
                let tag = tag.as_deref();
                let plain = matches!(style, ScalarStyle::Plain) && !is_str_tag(tag);
                let node = Node { kind: Kind::Scalar { text: value.into_owned(), plain, binary: is_binary_tag(tag) }, pos };
                b.finish(node, anchor);
            }
            Event::SequenceStart(anchor, _) => b.push(Frame::Seq { pos, anchor, items: Vec::new() }, pos)?,
            Event::MappingStart(anchor, _) => b.push(Frame::Map { pos, anchor, entries: Vec::new(), key: None }, pos)?,
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match b.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => (Node { kind: Kind::Seq(items), pos }, anchor),
                    Some(Frame::Map { pos, anchor, entries, key }) => {
                        let mut entries = entries;
                        if let Some(k) = key {
                            // A key without a value (should not happen: the
                            // parser emits an empty scalar).
                            let p = k.pos;
                            entries.push((k, Node { kind: Kind::Scalar { text: String::new(), plain: true, binary: false }, pos: p }));
                        }
                        (Node { kind: Kind::Map(merge_keys(entries)), pos }, anchor)
                    }
                    None => return Err(YamlError { pos, message: "unbalanced end of a collection".into() }),
                };
                b.finish(node.0, node.1);
            }
        }
    }
    Ok(b.root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &Node) -> &str {
        n.scalar().unwrap()
    }

    #[test]
    fn scalars_keep_text_style_and_position() {
        let n = load("a: 0644\nb: '0644'\nc: |\n  x\n  y\nd: !!binary aGk=\ne:\n").unwrap().unwrap();
        let Kind::Map(e) = &n.kind else { panic!("{n:?}") };
        assert_eq!(e.len(), 5);
        assert_eq!((s(&e[0].0), s(&e[0].1)), ("a", "0644"));
        assert!(matches!(e[0].1.kind, Kind::Scalar { plain: true, .. }));
        assert!(matches!(e[1].1.kind, Kind::Scalar { plain: false, .. }));
        assert_eq!(s(&e[2].1), "x\ny\n");
        assert!(matches!(e[2].1.kind, Kind::Scalar { plain: false, .. }));
        assert!(matches!(e[3].1.kind, Kind::Scalar { binary: true, .. }));
        assert!(e[4].1.is_null());
        assert_eq!(e[1].0.pos, Pos { line: 2, column: 1 });
        assert_eq!(e[1].1.pos, Pos { line: 2, column: 4 });
    }

    #[test]
    fn booleans_as_yaml_1_1() {
        for (t, b) in [("yes", Some(true)), ("On", Some(true)), ("false", Some(false)), ("'no'", None), ("'true'", Some(true)), ("1", None)]
        {
            let n = load(t).unwrap().unwrap();
            assert_eq!(n.as_bool(), b, "{t}");
        }
    }

    #[test]
    fn aliases_merge_keys_and_only_the_first_document() {
        let n = load("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n---\nother: 1\n").unwrap().unwrap();
        let Kind::Map(e) = &n.kind else { panic!() };
        assert_eq!(e.len(), 2);
        let Kind::Map(c) = &e[1].1.kind else { panic!() };
        let got: Vec<_> = c.iter().map(|(k, v)| (s(k), s(v))).collect();
        assert_eq!(got, [("y", "3"), ("x", "1")]);
    }

    #[test]
    fn limits() {
        // The billion laughs: each level doubles nine times.
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            doc += &format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n");
        }
        let e = load(&doc).unwrap_err();
        assert!(e.message.contains("expands to more than"), "{e:?}");
        let deep = "[".repeat(MAX_DEPTH + 10);
        assert!(load(&deep).is_err());
        let e = load("a: [1, 2\nb: c\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        assert_eq!(load("# only a comment\n").unwrap(), None);
        assert_eq!(load("").unwrap(), None);
    }
}
