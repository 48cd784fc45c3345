//! Command lines of the deployment checked against the real binary: every flag must exist in
//! `tandem SUB --help`, and the whole line must parse (values included).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// The value of `--flag` in a command line (`--flag=v` or `--flag v`).
pub fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    argv.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            Some(v)
        } else if a == name {
            argv.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

/// `tandem SUB --help`, once per subcommand.
fn help(sub: &str) -> String {
    static CACHE: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap();
    cache
        .entry(sub.to_string())
        .or_insert_with(|| {
            let (ok, out, err) = super::procs::run(&[sub, "--help"]);
            assert!(ok, "tandem {sub} --help failed: {err}");
            out
        })
        .clone()
}

fn help_flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

/// Checks that every flag of `argv` exists in `tandem SUB --help` and that the binary parses
/// the whole command line (values included) by running it with `--help` appended.
pub fn check_command(place: &str, argv: &[String]) {
    let sub = argv
        .first()
        .unwrap_or_else(|| panic!("{place}: no subcommand"));
    let known = help_flags(&help(sub));
    let mut parsed: Vec<&str> = Vec::new();
    for a in argv {
        let Some(name) = a.starts_with("--").then(|| a.split('=').next().unwrap()) else {
            parsed.push(a);
            continue;
        };
        assert!(known.contains(name), "{place}: tandem {sub} has no {name}");
        parsed.push(a);
    }
    parsed.push("--help");
    let (ok, _, err) = super::procs::run(&parsed);
    assert!(
        ok,
        "{place}: tandem {} does not parse: {err}",
        argv.join(" ")
    );
}
