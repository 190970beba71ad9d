//! Guards the agent's architecture (issue 15) by reading its source: the library's files form
//! no import cycle, the pure core (planner, unit renderer, route computation, host policy,
//! health spec, shared vocabulary) reaches nothing that does I/O, and the backends reach
//! nothing from planning. A `use` that breaks a rule fails here with the path of files that
//! leads to it, before it becomes a tangle.
//!
//! An edge is any `crate::…`, `super::…` or `self::…` path outside the file's `#[cfg(test)]`
//! module (tests may use whatever they need), resolved to the longest module path that is a
//! file; a `mod.rs` also reaches its children by their bare names (`identity::Accounts`).

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules (and their submodules) that must do no I/O and reach no module that does.
const PURE_CORE: &[&str] = &[
    "vocab",
    "plan",
    "render",
    "routes",
    "policy",
    "health::spec",
    "health::quarantine",
    "state",
    "rollback_hold",
    "generation",
    "tick::summary",
    "metrics",
    "hooks",
    "host_report",
    "wave_gate",
    "system_deploy",
];

/// What a backend may reach: other backends, the shared vocabulary, its configuration.
const BACKEND_MAY_REACH: &[&str] = &["backend", "vocab", "config", ""];

/// Library modules by module path (`""` is the crate root), with the modules each refers to.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every file of the library (the binary's `main.rs` and `command/` are the verbs, not it).
fn library_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(src_dir()).unwrap().to_path_buf();
        if rel == Path::new("main.rs") || rel == Path::new("command") {
            continue;
        }
        if path.is_dir() {
            library_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `health/spec.rs` → `health::spec`, `health/mod.rs` → `health`, `lib.rs` → `""`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts.join("::")
}

fn join(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => base.to_owned(),
        _ => format!("{base}::{rest}"),
    }
}

fn parent(module: &str) -> &str {
    module.rsplit_once("::").map_or("", |(p, _)| p)
}

/// The file's code outside comments and its test module.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_owned()];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(expand)
        .map(|p| match p.as_str() {
            "self" => prefix.to_owned(),
            _ => join(prefix, &p),
        })
        .collect()
}

/// The paths a file's code names: the trees of its `use` items, and every other
/// `crate::…`/`super::…`/`self::…` path written inline.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    // `use` items first (they may span lines and hold groups), then they are blanked out.
    let mut others = String::new();
    while let Some(at) = rest.find("use ") {
        // An item: only indentation or a visibility before it on its line (not a word in
        // a string such as "the port in use by").
        let line = rest[..at].rsplit('\n').next().unwrap_or("").trim();
        let starts_item = line.is_empty() || line.starts_with("pub");
        others.push_str(&rest[..at]);
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if starts_item {
            paths.extend(expand(&after[..end].split_whitespace().collect::<String>()));
            rest = &after[end..];
        } else {
            others.push_str("use ");
            rest = after;
        }
    }
    others.push_str(rest);
    let bytes = others.as_bytes();
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = others[from..].find(root) {
            let at = from + i;
            from = at + root.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let len = others[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(others.len() - at);
            paths.push(others[at..at + len].trim_end_matches(':').to_owned());
        }
    }
    paths
}

/// The module a path refers to: the longest prefix of it that is a module.
fn resolve(path: &str, here: &str, is_mod_rs: bool, modules: &BTreeSet<String>) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").collect();
    let mut base = String::new();
    let own = if is_mod_rs { here } else { parent(here) };
    match segments.first().copied() {
        Some("crate") => {
            segments.remove(0);
        }
        Some("super") => {
            base = parent(own).to_owned();
            segments.remove(0);
            while segments.first() == Some(&"super") {
                base = parent(&base).to_owned();
                segments.remove(0);
            }
        }
        Some("self") => {
            base = here.to_owned();
            segments.remove(0);
        }
        // A bare path: a child module of this one (`identity::Accounts` in `policy/mod.rs`).
        _ => base = here.to_owned(),
    }
    let mut found = None;
    let mut current = base.clone();
    if modules.contains(&current) && !segments.is_empty() {
        found = Some(current.clone());
    }
    for s in segments {
        current = join(&current, s);
        if modules.contains(&current) {
            found = Some(current.clone());
        } else {
            break;
        }
    }
    // A bare path that names no child is an outside crate or a local name.
    if !path.starts_with("crate") && !path.starts_with("super") && !path.starts_with("self") {
        found = found.filter(|m| *m != base);
    }
    found
}

/// The library's import graph, read from `dir`.
fn graph_of(files: &[(String, bool, String)]) -> Graph {
    let modules: BTreeSet<String> = files.iter().map(|(m, _, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, is_mod_rs, text) in files {
        let code = code_of(text);
        let mut paths = paths_in(&code);
        // Bare child paths (`identity::Accounts`) in a file that has children.
        for child in modules
            .iter()
            .filter(|m| parent(m) == module && *m != module)
        {
            let name = child.rsplit("::").next().unwrap_or(child);
            if code.contains(&format!("{name}::")) {
                paths.push(name.to_owned());
            }
        }
        let edges = graph.entry(module.clone()).or_default();
        for p in paths {
            if let Some(target) = resolve(&p, module, *is_mod_rs, &modules)
                && target != *module
            {
                edges.insert(target);
            }
        }
    }
    graph
}

fn library_graph() -> Graph {
    let mut paths = Vec::new();
    library_files(&src_dir(), &mut paths);
    let files: Vec<(String, bool, String)> = paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(src_dir()).unwrap();
            let module = module_of(rel);
            let is_mod_rs = rel
                .file_name()
                .is_some_and(|f| f == "mod.rs" || f == "lib.rs");
            (module, is_mod_rs, std::fs::read_to_string(p).unwrap())
        })
        .collect();
    graph_of(&files)
}

fn within(module: &str, area: &str) -> bool {
    area.is_empty() && module.is_empty()
        || !area.is_empty() && (module == area || module.starts_with(&format!("{area}::")))
}

/// Cycles: every strongly connected group of more than one module, as a path around it.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    for start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        // A shortest way back to `start`, breadth first.
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.as_str()]);
        let mut closed = None;
        while let Some(m) = queue.pop_front() {
            for next in graph.get(m).into_iter().flatten() {
                if next == start {
                    closed = Some(m);
                    break;
                }
                if !prev.contains_key(next.as_str()) {
                    prev.insert(next, m);
                    queue.push_back(next);
                }
            }
            if closed.is_some() {
                break;
            }
        }
        if let Some(mut m) = closed {
            let mut cycle = vec![start.clone()];
            let mut back = vec![m.to_owned()];
            while m != start {
                m = prev[m];
                if m != start {
                    back.push(m.to_owned());
                }
            }
            back.reverse();
            cycle.extend(back);
            cycle.push(start.clone());
            seen.extend(cycle.iter().cloned());
            found.push(cycle);
        }
    }
    found
}

/// Modules `from` reaches that `allowed` rejects, each with the way there.
fn reaches_outside(graph: &Graph, from: &str, allowed: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    let mut bad = Vec::new();
    while let Some(m) = queue.pop_front() {
        for next in graph.get(m).into_iter().flatten() {
            if next == from || prev.contains_key(next.as_str()) {
                continue;
            }
            prev.insert(next, m);
            if allowed(next) {
                queue.push_back(next);
            } else {
                let mut way = vec![next.as_str()];
                let mut at = next.as_str();
                while at != from {
                    at = prev[at];
                    way.push(at);
                }
                way.reverse();
                bad.push(way.join(" → "));
            }
        }
    }
    bad
}

fn show(module: &str) -> &str {
    if module.is_empty() {
        "(crate root)"
    } else {
        module
    }
}

#[test]
fn the_agent_library_has_no_import_cycle() {
    let graph = library_graph();
    let found: Vec<String> = cycles(&graph)
        .iter()
        .map(|c| c.iter().map(|m| show(m)).collect::<Vec<_>>().join(" → "))
        .collect();
    assert!(
        found.is_empty(),
        "import cycles among the agent's files (move what both sides need into a module \
         both import, e.g. vocab/):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_pure_core_reaches_nothing_that_does_io() {
    let graph = library_graph();
    let pure = |m: &str| m.is_empty() || PURE_CORE.iter().any(|a| within(m, a));
    let mut bad = Vec::new();
    for module in graph.keys().filter(|m| !m.is_empty() && pure(m)) {
        bad.extend(reaches_outside(&graph, module, &pure));
    }
    assert!(
        bad.is_empty(),
        "the pure core (planner, renderer, routes, policy, health spec, vocabulary) reaches \
         modules outside it:\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn backends_reach_nothing_from_planning() {
    let graph = library_graph();
    let allowed = |m: &str| BACKEND_MAY_REACH.iter().any(|a| within(m, a));
    let mut bad = Vec::new();
    for module in graph.keys().filter(|m| within(m, "backend")) {
        for target in &graph[module] {
            if !allowed(target) {
                bad.push(format!("{module} → {}", show(target)));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "backends import planning types (move the shared type into vocab/):\n  {}",
        bad.join("\n  ")
    );
}

/// The reader itself, on literals: a guard that finds nothing proves nothing.
#[test]
fn the_reader_finds_grouped_inline_and_relative_imports_and_cycles() {
    let file = |m: &str, is_mod: bool, t: &str| (m.to_owned(), is_mod, t.to_owned());
    let graph = graph_of(&[
        file("", true, "pub mod a;\npub mod b;\npub mod c;\n"),
        file(
            "a",
            true,
            "pub mod x;\nuse crate::{b::One, c};\nuse x::Thing;\n#[cfg(test)]\nuse crate::d;\n",
        ),
        file(
            "a::x",
            false,
            "fn f() { super::super::b::g(); }\n// crate::c::h\n",
        ),
        file("b", false, "fn g() -> crate::a::x::T { todo!() }\n"),
        file("c", false, "use std::fmt;\nuse serde::Serialize;\n"),
        file("d", false, ""),
    ]);
    let edges = |m: &str| graph[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(edges("a"), ["a::x", "b", "c"]);
    assert_eq!(edges("a::x"), ["b"]);
    assert_eq!(edges("b"), ["a::x"]);
    assert!(edges("c").is_empty());
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains(&"a::x".to_owned()) && found[0].contains(&"b".to_owned()));
    let outside = reaches_outside(&graph, "a", &|m| m != "b");
    assert_eq!(outside, ["a → b"]);
}
