//! Finding a field's line and column in a policy's source, through toml_edit's spans, so
//! that every problem reads `FILE:LINE:COLUMN: FIELD: MESSAGE`.

use super::PolicyProblem;
use std::ops::Range;
use toml_edit::{Array, ImDocument, Item, Table, TableLike, Value};

// ---------------------------------------------------------------------------------------------
// Locating fields in the source
// ---------------------------------------------------------------------------------------------

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) fn keys(parts: &[&str]) -> Vec<Seg> {
    parts.iter().map(|p| Seg::Key(p.to_string())).collect()
}

pub(super) fn indexed(parts: &[&str], i: usize) -> Vec<Seg> {
    let mut path = keys(parts);
    path.push(Seg::Index(i));
    path
}

pub(super) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(&quote_key(k)),
            Seg::Key(k) => out.push_str(&format!(".{}", quote_key(k))),
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

pub(super) fn quote_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// A node of the parsed document.
#[derive(Clone, Copy)]
pub(super) enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

type Child<'a> = (Seg, Option<Range<usize>>, Node<'a>);

impl<'a> Node<'a> {
    pub(super) fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
            Node::Table(t) => t.span(),
        }
    }

    pub(super) fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
            Node::Table(t) => Some(t),
        }
    }

    pub(super) fn array(self) -> Option<&'a Array> {
        match self {
            Node::Item(i) => i.as_array(),
            Node::Value(v) => v.as_array(),
            Node::Table(_) => None,
        }
    }

    /// Children with the span of their key, if they have one.
    pub(super) fn children(self) -> Vec<Child<'a>> {
        if let Some(t) = self.table_like() {
            let key_span = |k: &str| t.key(k).and_then(|k| k.span());
            return t
                .iter()
                .map(|(k, i)| (Seg::Key(k.into()), key_span(k), Node::Item(i)))
                .collect();
        }
        if let Some(a) = self.array() {
            return a
                .iter()
                .enumerate()
                .map(|(i, v)| (Seg::Index(i), None, Node::Value(v)))
                .collect();
        }
        if let Node::Item(Item::ArrayOfTables(a)) = self {
            return a
                .iter()
                .enumerate()
                .map(|(i, t)| (Seg::Index(i), None, Node::Table(t)))
                .collect();
        }
        Vec::new()
    }

    /// The span of the node at `path` (its value, else its key).
    pub(super) fn lookup(self, path: &[Seg]) -> Option<Range<usize>> {
        let Some((first, rest)) = path.split_first() else {
            return self.span();
        };
        let (_, key_span, child) = self.children().into_iter().find(|c| &c.0 == first)?;
        if rest.is_empty() {
            child.span().or(key_span)
        } else {
            child.lookup(rest)
        }
    }

    /// Every (path, span) pair below this node, keys and values both.
    pub(super) fn collect(self, path: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, Range<usize>)>) {
        for (seg, key_span, child) in self.children() {
            path.push(seg);
            out.extend(
                key_span
                    .into_iter()
                    .chain(child.span())
                    .map(|r| (path.clone(), r)),
            );
            child.collect(path, out);
            path.pop();
        }
    }
}

pub(super) struct Locator<'a> {
    src: &'a str,
    file: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> Locator<'a> {
    pub(super) fn new(src: &'a str, file: &'a str) -> Self {
        Locator {
            src,
            file,
            doc: ImDocument::parse(src).ok(),
        }
    }

    pub(super) fn problem(&self, offset: usize, field: String, message: &str) -> PolicyProblem {
        let (line, column) = line_col(self.src, offset);
        let message = message.trim().replace('\n', "; ");
        let file = self.file.to_string();
        PolicyProblem {
            file,
            line,
            column,
            field,
            message,
        }
    }

    /// A semantic problem at `path`, or at its nearest ancestor found in the source.
    pub(super) fn problem_at(&self, path: &[Seg], message: &str) -> PolicyProblem {
        let offset = self.span_of(path).map_or(0, |r| r.start);
        self.problem(offset, render(path), message)
    }

    pub(super) fn span_of(&self, path: &[Seg]) -> Option<Range<usize>> {
        let root = Node::Item(self.doc.as_ref()?.as_item());
        (0..=path.len()).rev().find_map(|n| root.lookup(&path[..n]))
    }

    /// A syntax or type error from toml/serde.
    pub(super) fn toml_problem(&self, e: &toml::de::Error) -> PolicyProblem {
        let span = e.span();
        let field = match (&self.doc, &span) {
            (None, _) => "(syntax)".to_string(),
            (Some(_), span) => self.field_of_error(span.as_ref(), e.message()),
        };
        self.problem(span.map_or(0, |r| r.start), field, e.message())
    }

    pub(super) fn field_of_error(&self, span: Option<&Range<usize>>, message: &str) -> String {
        let mut path = span.map(|s| self.path_around(s)).unwrap_or_default();
        if let Some(name) = missing_field(message) {
            path.push(Seg::Key(name));
        }
        if path.is_empty() {
            "(document)".to_string()
        } else {
            render(&path)
        }
    }

    /// The deepest path whose key or value span encloses `span`.
    pub(super) fn path_around(&self, span: &Range<usize>) -> Vec<Seg> {
        let Some(doc) = &self.doc else {
            return Vec::new();
        };
        let mut all = Vec::new();
        Node::Item(doc.as_item()).collect(&mut Vec::new(), &mut all);
        let inside = |r: &Range<usize>| r.start <= span.start && span.end <= r.end;
        let found = all
            .into_iter()
            .filter(|(_, r)| inside(r))
            .max_by_key(|(p, _)| p.len());
        found.map(|(p, _)| p).unwrap_or_default()
    }
}

impl Locator<'_> {
    /// The whole `key = value` of a table (not an inline table, where a blank would leave a
    /// stray comma) that holds `span`: what `parse_policy` blanks to read on past a bad value.
    pub(super) fn assignment_around(&self, span: &Range<usize>) -> Option<Range<usize>> {
        let path = self.path_around(span);
        let mut node = Node::Item(self.doc.as_ref()?.as_item());
        for seg in &path {
            let (_, key_span, child) = node.children().into_iter().find(|c| &c.0 == seg)?;
            let in_table =
                matches!(node, Node::Table(_)) || matches!(node, Node::Item(Item::Table(_)));
            let is_value = matches!(child, Node::Item(Item::Value(_)));
            if in_table && is_value {
                return Some(key_span?.start..child.span()?.end);
            }
            node = child;
        }
        None
    }
}

pub(super) fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next().map(str::to_string)
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = &src[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
