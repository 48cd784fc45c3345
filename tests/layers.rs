//! The crate's import graph, read from src/: imports run one way, down the layers of
//! docs/ARCHITECTURE.md (a room may use only the rooms below it), and no two files of a room
//! use each other, directly or around a circle. A type two rooms share lives below both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rooms of src/, bottom up. Each may import only the rooms before it.
const LAYERS: &[&str] = &[
    "error",
    "config",
    "timeline",
    "tokenizer",
    "kv",
    "backend",
    "model",
    "engine",
    "loader",
    "metrics",
    "wire",
    "transfer",
    "router",
    "worker",
    "frontend",
    "replay",
    "sim",
    "cli",
];

/// A module's path below the crate root, e.g. ["worker", "service"].
type Module = Vec<String>;

fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel: PathBuf = path.strip_prefix(src).unwrap().with_extension("");
            let mut m: Module = rel.iter().map(|c| c.to_string_lossy().into()).collect();
            if m.last().is_some_and(|l| l == "mod") {
                m.pop();
            }
            if m == ["lib"] || m == ["main"] {
                m.clear();
            }
            out.insert(m, code_of(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

/// A file's code without comments and without its unit tests (which may reach anywhere).
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with `crate::` or `super::` in `code`, as written (groups in braces
/// expanded one level: `crate::a::{b, c::d}` gives a::b and a::c::d).
fn paths(code: &str) -> Vec<(bool, Vec<String>)> {
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    for (start, kw) in [("crate::", true), ("super::", false)]
        .iter()
        .flat_map(|(k, is_crate)| code.match_indices(k).map(move |(i, _)| (i, *is_crate)))
    {
        if start > 0 && (ident(bytes[start - 1]) || bytes[start - 1] == b':') {
            continue;
        }
        let mut i = start;
        let mut segs: Vec<String> = Vec::new();
        loop {
            let s = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            segs.push(code[s..i].to_string());
            if code[i..].starts_with("::{") {
                let end = code[i..].find('}').map_or(code.len(), |e| i + e);
                for item in code[i + 3..end].split(',') {
                    let item: Vec<String> = item
                        .trim()
                        .split("::")
                        .map(|p| p.trim().trim_start_matches('{').to_string())
                        .filter(|p| !p.is_empty() && p != "self" && !p.starts_with('*'))
                        .collect();
                    let mut p = segs.clone();
                    p.extend(item);
                    out.push((kw, p));
                }
                break;
            }
            if code[i..].starts_with("::") && bytes.get(i + 2).is_some_and(|&c| ident(c)) {
                i += 2;
                continue;
            }
            out.push((kw, segs.clone()));
            break;
        }
    }
    out
}

/// The module a path names (its longest prefix that is one), resolving `super`.
fn target(from: &Module, path: &[String], known: &BTreeMap<Module, String>) -> Option<Module> {
    let mut abs: Module = Vec::new();
    let mut rest = path;
    if rest.first().is_some_and(|s| s == "crate") {
        rest = &rest[1..];
    } else {
        abs = from.clone();
        while rest.first().is_some_and(|s| s == "super") {
            abs.pop();
            rest = &rest[1..];
        }
    }
    abs.extend(rest.iter().cloned());
    (1..=abs.len())
        .rev()
        .map(|k| abs[..k].to_vec())
        .find(|m| known.contains_key(m))
}

/// Module-to-module uses, a module's uses of its own ancestors (a mod.rs's items) left out.
fn edges() -> BTreeSet<(Module, Module)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    let mut out = BTreeSet::new();
    for (m, code) in &known {
        for (_, path) in paths(code) {
            if let Some(t) = target(m, &path, &known)
                && t != *m
                && !m.starts_with(&t)
            {
                out.insert((m.clone(), t));
            }
        }
    }
    out
}

#[test]
fn rooms_import_only_the_rooms_below_them() {
    let layer = |m: &Module| -> Option<usize> {
        let room = m.first()?;
        Some(
            LAYERS
                .iter()
                .position(|l| l == room)
                .unwrap_or_else(|| panic!("src/{room} is not in LAYERS: place it in the map")),
        )
    };
    let mut wrong = Vec::new();
    for (a, b) in edges() {
        if let (Some(la), Some(lb)) = (layer(&a), layer(&b))
            && la != lb
            && lb > la
        {
            wrong.push(format!("{} uses {}", a.join("/"), b.join("/")));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run up the layers ({}):\n{}",
        LAYERS.join(" < "),
        wrong.join("\n")
    );
}

#[test]
fn no_import_circles_inside_a_room() {
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (a, b) in edges() {
        if a.first() == b.first() {
            graph.entry(a).or_default().insert(b);
        }
    }
    // A circle is a path back to where it started; depth-first from every module.
    let mut circles = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((m, trail)) = stack.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = trail.iter().map(|t| t.join("/")).collect();
                    circles.push(format!("{} -> {}", names.join(" -> "), start.join("/")));
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

/// The reader itself, on code with each kind of path it must see.
#[test]
fn the_reader_sees_grouped_relative_and_qualified_paths() {
    let got = paths(&code_of(
        "use crate::a::{b, c::d};\nuse super::e::F;\nlet x = crate::g::h(1); // crate::nope\n",
    ));
    let got: Vec<String> = got.iter().map(|(_, p)| p.join("::")).collect();
    assert_eq!(
        got,
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::g::h",
            "super::e::F"
        ]
    );
}
