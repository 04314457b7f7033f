//! Architecture invariant: dependencies in `src/` point one way.
//!
//! `domain ← store ← engine ← recon ← ops ← web ← app`, with `adapters` beside `store` (on the
//! domain only, used by `web` and `app`). This test reads every `crate::` path in the library's
//! files (test modules aside) and fails, naming the file and the path, on an edge the table
//! below forbids; and on any circle between the files or folders of one folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may use, besides itself.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("store", &["domain"]),
    ("adapters", &["domain"]),
    ("engine", &["domain", "store"]),
    ("recon", &["domain", "store", "engine"]),
    ("ops", &["domain", "store", "engine", "recon"]),
    (
        "web",
        &["domain", "store", "engine", "recon", "ops", "adapters"],
    ),
    (
        "app",
        &[
            "domain", "store", "engine", "recon", "ops", "web", "adapters",
        ],
    ),
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The file's text without its `#[cfg(test)] mod tests { … }` (tests may reach anywhere).
fn code_of(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Module paths a file names: `crate::a::b…` (also inside `use crate::{…}` groups), and for
/// a child file its siblings named through `super::`.
fn paths_in(code: &str, parent: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|x| {
                x.trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|x| !x.is_empty())
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.push(ident(item));
            }
        } else {
            out.push(ident(rest));
        }
    }
    for (i, _) in code.match_indices("super::") {
        if parent.is_empty() {
            continue;
        }
        let mut p = parent.to_vec();
        p.extend(ident(&code[i + 7..]));
        out.push(p);
    }
    out
}

/// The node a module path stands for: across top-level modules the module itself; inside a
/// folder, its child file or folder.
fn node_of(src: &Path, segs: &[String]) -> Option<Vec<String>> {
    let first = segs.first()?;
    let dir = src.join(first);
    if dir.is_dir() {
        if let Some(second) = segs.get(1) {
            if dir.join(format!("{second}.rs")).exists() || dir.join(second).is_dir() {
                return Some(vec![first.clone(), second.clone()]);
            }
        }
        return Some(vec![first.clone()]);
    }
    src.join(format!("{first}.rs"))
        .exists()
        .then(|| vec![first.clone()])
}

fn file_node(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.truncate(2);
    parts
}

struct Scan {
    forbidden: Vec<String>,
    /// Edges between siblings of one folder.
    siblings: BTreeMap<String, BTreeSet<String>>,
}

fn scan(src: &Path) -> Scan {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let mut scan = Scan {
        forbidden: Vec::new(),
        siblings: BTreeMap::new(),
    };
    for f in files {
        let rel = f.strip_prefix(src).unwrap().to_path_buf();
        let me = file_node(&rel);
        let top = me[0].clone();
        if matches!(top.as_str(), "lib" | "main" | "cmd") {
            continue;
        }
        let may = allowed.get(top.as_str()).unwrap_or_else(|| {
            panic!(
                "{}: top-level module `{top}` is not in the layer table",
                rel.display()
            )
        });
        let text = std::fs::read_to_string(&f).unwrap();
        let parent: Vec<String> = if me.len() == 2 && !rel.ends_with("mod.rs") {
            vec![me[0].clone()]
        } else {
            Vec::new()
        };
        for path in paths_in(code_of(&text), &parent) {
            let Some(n) = node_of(src, &path) else {
                continue;
            };
            if n[0] != top {
                if !may.contains(&n[0].as_str()) {
                    scan.forbidden.push(format!(
                        "{} uses crate::{} — `{top}` may use only {:?}",
                        rel.display(),
                        path.join("::"),
                        may
                    ));
                }
            } else if me.len() == 2 && n.len() == 2 && n != me {
                scan.siblings
                    .entry(me.join("/"))
                    .or_default()
                    .insert(n.join("/"));
            }
        }
    }
    scan
}

/// Strongly connected components with more than one node (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        idx: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    fn visit(t: &mut T, v: &str) {
        let i = t.idx.len();
        t.idx.insert(v.into(), i);
        t.low.insert(v.into(), i);
        t.stack.push(v.into());
        t.on.insert(v.into());
        for w in t.edges.get(v).cloned().unwrap_or_default() {
            if !t.idx.contains_key(&w) {
                visit(t, &w);
                let lw = t.low[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(&w) {
                let iw = t.idx[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.idx[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(&w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        idx: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.idx.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn layers_point_one_way() {
    let s = scan(Path::new("src"));
    assert!(
        s.forbidden.is_empty(),
        "{} forbidden dependencies:\n{}",
        s.forbidden.len(),
        s.forbidden.join("\n")
    );
}

#[test]
fn no_two_files_of_a_folder_import_each_other() {
    let s = scan(Path::new("src"));
    let found = circles(&s.siblings);
    assert!(found.is_empty(), "circles: {found:?}");
}

/// The checks can fail: a planted upward edge and a planted circle are found.
#[test]
fn the_checks_find_what_they_forbid() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    for (f, text) in [
        ("domain/mod.rs", "pub mod a;\npub mod b;\n"),
        ("domain/a.rs", "use crate::store::Db;\nuse super::b::X;\n"),
        ("domain/b.rs", "use crate::domain::a::Y;\n"),
        ("store/mod.rs", "use crate::{domain::a, engine::Engine};\n"),
        (
            "engine/mod.rs",
            "use crate::store::Db;\n#[cfg(test)]\nmod tests {\n use crate::app::X;\n}\n",
        ),
    ] {
        let p = src.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let s = scan(src);
    assert_eq!(s.forbidden.len(), 2, "{:?}", s.forbidden);
    assert!(
        s.forbidden[0].contains("domain/a.rs uses crate::store::Db")
            || s.forbidden[1].contains("domain/a.rs uses crate::store::Db")
    );
    assert!(s
        .forbidden
        .iter()
        .any(|f| f.contains("store/mod.rs uses crate::engine::Engine")));
    assert_eq!(
        circles(&s.siblings),
        vec![vec!["domain/a".to_string(), "domain/b".to_string()]]
    );
}

/// Files outside `src/store` that still run SQL themselves. The list only shrinks: a file
/// not on it that runs a query fails the test, and so does a listed file that no longer
/// does (take it off).
const SQL_NOT_YET_IN_STORE: &[&str] = &[
    "app/bench/db.rs",
    "cmd/web.rs",
    "engine/apply.rs",
    "engine/plan.rs",
    "engine/pursue.rs",
    "engine/refresh.rs",
    "engine/resolve.rs",
    "ops/daily.rs",
    "ops/mod.rs",
    "recon/cases.rs",
    "recon/refund.rs",
    "recon/settle.rs",
    "recon/statement.rs",
    "web/api/admin.rs",
    "web/api/idempotency.rs",
    "web/api/loans.rs",
    "web/auth.rs",
    "web/health.rs",
];

/// Files below `src` (outside `store/`) whose code runs SQL: a query call or a bulk
/// statement of `store::bulk`.
fn files_with_sql(src: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let mut out = BTreeSet::new();
    for f in files {
        let rel = f
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("store/") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = code_of(&text);
        let sql = [
            "sqlx::query",
            "query_as(",
            "query_scalar(",
            ".with_values(",
            "Rows::new(",
        ];
        if sql.iter().any(|s| code.contains(s)) {
            out.insert(rel);
        }
    }
    out
}

#[test]
fn sql_stays_in_the_store() {
    let found = files_with_sql(Path::new("src"));
    let allowed: BTreeSet<String> = SQL_NOT_YET_IN_STORE.iter().map(|s| s.to_string()).collect();
    let new: Vec<_> = found.difference(&allowed).collect();
    assert!(
        new.is_empty(),
        "SQL outside src/store (move it into a store module): {new:?}"
    );
    let gone: Vec<_> = allowed.difference(&found).collect();
    assert!(
        gone.is_empty(),
        "no SQL left in {gone:?}: take them off SQL_NOT_YET_IN_STORE"
    );
}
