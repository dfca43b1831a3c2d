//! The dependency rule of `docs/ARCHITECTURE.md`, checked against the code: every
//! `crate::<module>` a file of `src/` names must be an edge the rule allows, the graph has no
//! cycle, and only `sandbox/` names bollard. Reads the source as text; needs no engine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may use. Lower layers first; an edge upwards is a
/// defect. `lib.rs` and `main.rs` wire everything and are not checked.
const RULE: &[(&str, &[&str])] = &[
    ("names", &[]),
    ("languages", &["names"]),
    ("config", &["languages", "names"]),
    ("sandbox", &["config", "languages", "names"]),
    ("shared", &["config"]),
    ("metrics", &["sandbox"]),
    (
        "executor",
        &["sandbox", "metrics", "config", "languages", "names"],
    ),
    ("rooms", &["executor", "config"]),
    ("submissions", &["executor", "shared", "config"]),
    (
        "sessions",
        &[
            "rooms",
            "executor",
            "shared",
            "metrics",
            "config",
            "languages",
            "names",
        ],
    ),
    ("callbacks", &["config"]),
    ("access", &["shared", "config"]),
    ("connections", &["access"]),
    (
        "api",
        &[
            "access",
            "connections",
            "executor",
            "sessions",
            "submissions",
            "callbacks",
            "rooms",
            "shared",
            "metrics",
            "config",
            "languages",
            "names",
        ],
    ),
    (
        "bench",
        &["api", "executor", "sandbox", "config", "languages", "names"],
    ),
    (
        "app",
        &[
            "api",
            "access",
            "connections",
            "executor",
            "sessions",
            "submissions",
            "callbacks",
            "shared",
            "metrics",
            "sandbox",
            "config",
            "languages",
            "names",
        ],
    ),
];

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs`, `main.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.trim_end_matches(".rs");
    (!matches!(module, "lib" | "main")).then(|| module.to_owned())
}

/// The code of a file without its `//` comments (doc comments name other modules freely).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal is rare in this code base and only hides code.
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module named as `crate::<module>`, including in `crate::{a::…, b}` groups.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level entries of the group: the first identifier after `{` and after each
            // comma at depth 0.
            let mut depth = 0;
            let mut expecting = true;
            for (index, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expecting = true,
                    c if expecting && (c.is_ascii_lowercase() || c == '_') => {
                        named.insert(identifier(&group[index..]));
                        expecting = false;
                    }
                    c if !c.is_whitespace() => expecting = false,
                    _ => {}
                }
            }
        } else {
            let module = identifier(rest);
            if !module.is_empty() {
                named.insert(module);
            }
        }
    }
    named
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

struct Graph {
    /// module -> (module it uses -> a file that uses it)
    edges: BTreeMap<String, BTreeMap<String, PathBuf>>,
    /// files outside `sandbox/` that name bollard
    bollard: Vec<PathBuf>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    let mut bollard = Vec::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        if module != "sandbox" && code.contains("bollard") {
            bollard.push(file.clone());
        }
        let uses = edges.entry(module.clone()).or_default();
        for used in crate_paths(&code) {
            if used != module {
                uses.entry(used).or_insert_with(|| file.clone());
            }
        }
    }
    Graph { edges, bollard }
}

/// A cycle in `edges`, if there is one, as the modules along it.
fn cycle<'a>(edges: impl Fn(&str) -> Vec<&'a str>, nodes: &[&'a str]) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        edges: &dyn Fn(&str) -> Vec<&'a str>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut found: Vec<String> = path[at..].iter().map(|n| n.to_string()).collect();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for next in edges(node) {
            if let Some(found) = visit(next, edges, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in nodes {
        if let Some(found) = visit(node, &edges, &mut Vec::new(), &mut done) {
            return Some(found);
        }
    }
    None
}

fn allowed(module: &str) -> Option<&'static [&'static str]> {
    RULE.iter()
        .find(|(m, _)| *m == module)
        .map(|(_, uses)| *uses)
}

#[test]
fn the_rule_itself_has_no_cycle() {
    let nodes: Vec<&str> = RULE.iter().map(|(m, _)| *m).collect();
    let found = cycle(|m| allowed(m).unwrap_or(&[]).to_vec(), &nodes);
    assert_eq!(found, None, "the rule has a cycle");
}

#[test]
fn every_import_is_an_edge_the_rule_allows() {
    let graph = graph();
    let mut illegal = Vec::new();
    for (module, uses) in &graph.edges {
        let Some(allowed) = allowed(module) else {
            illegal.push(format!(
                "module `{module}` is not in the rule (tests/layering.rs)"
            ));
            continue;
        };
        for (used, file) in uses {
            if !allowed.contains(&used.as_str()) {
                illegal.push(format!(
                    "{module} -> {used} ({}): not allowed; {module} may use {allowed:?}",
                    file.display()
                ));
            }
        }
    }
    assert!(illegal.is_empty(), "{}", illegal.join("\n"));
}

#[test]
fn the_modules_have_no_cycle() {
    let graph = graph();
    let nodes: Vec<&str> = graph.edges.keys().map(String::as_str).collect();
    let found = cycle(
        |m| {
            graph
                .edges
                .get(m)
                .map(|uses| uses.keys().map(String::as_str).collect())
                .unwrap_or_default()
        },
        &nodes,
    );
    assert_eq!(found, None, "a cycle of imports");
}

#[test]
fn only_the_sandbox_names_bollard() {
    assert!(graph().bollard.is_empty(), "{:?}", graph().bollard);
}

#[test]
fn the_http_layer_never_reaches_the_sandbox() {
    let graph = graph();
    let api = graph.edges.get("api").expect("an api module");
    assert!(
        !api.contains_key("sandbox"),
        "api -> sandbox: {:?}",
        api.get("sandbox")
    );
    assert!(!api.contains_key("app"), "api -> app: {:?}", api.get("app"));
}

#[test]
fn crate_paths_are_read_in_every_form() {
    let code = "use crate::config::Config;\nuse crate::{access::Access, api::{self, X}, names};\nlet x = crate::metrics::Metrics::new();";
    let named: Vec<String> = crate_paths(code).into_iter().collect();
    assert_eq!(named, ["access", "api", "config", "metrics", "names"]);
}
