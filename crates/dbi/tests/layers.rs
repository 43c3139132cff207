//! The crate's layers, checked from its source: every `use` and every `crate::` path of a
//! file of `src/` must point to the file's own layer or one below it, and no files may form
//! an import cycle (within a layer too). The layers, bottom first, are those `src/lib.rs`
//! lists; `tools` may use only the tool API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, bottom first (a module's layer is its first path segment).
const LAYERS: &[&str] = &["error", "arch", "translate", "cache", "os", "tool", "engine", "tools"];
/// What the built-in tools may import.
const TOOLS_MAY_USE: &[&str] = &["tool", "error"];

/// A module path (`engine::syscalls::memory`), `""` for the crate root.
type Module = String;

/// The module of a source file, from its path below `src/`.
fn module_of(path: &str) -> Module {
    let p = path.trim_end_matches(".rs");
    let p = p.strip_suffix("/mod").unwrap_or(p);
    if p == "lib" {
        return String::new();
    }
    p.replace('/', "::")
}

/// The source without comments, string contents and test modules (`#[cfg(test)]` and what
/// follows it), which do not make dependencies.
fn code_of(src: &str) -> String {
    let src = src.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '"' && !escaped {
                        break;
                    }
                    escaped = c == '\\' && !escaped;
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands a path that may end in a `{...}` group into the full paths it names.
fn expand(prefix: &str, rest: &str, out: &mut Vec<String>) {
    let rest = rest.trim();
    let Some(group) = rest.strip_prefix('{') else {
        let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        match rest[head.len()..].trim_start().strip_prefix('{') {
            Some(_) if head.ends_with("::") => expand(&format!("{prefix}{head}"), &rest[head.len()..], out),
            _ => out.push(format!("{prefix}{}", head.trim_end_matches(':'))),
        }
        return;
    };
    let mut depth = 0;
    let close = group
        .char_indices()
        .find(|&(_, c)| {
            depth += match c {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            depth < 0
        })
        .map_or(group.len(), |(i, _)| i);
    let (mut depth, mut start) = (0, 0);
    let inner = &group[..close];
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                split_item(prefix, &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    split_item(prefix, &inner[start..], out);
}

fn split_item(prefix: &str, item: &str, out: &mut Vec<String>) {
    let item = item.trim();
    if item.is_empty() {
        return;
    }
    match item.find("::") {
        Some(i) if !item[..i].contains('{') => expand(&format!("{prefix}{}::", &item[..i]), &item[i + 2..], out),
        _ => expand(prefix, item, out),
    }
}

/// Every path a file names through `crate::`, `super::` or (in a module root) a `use` of
/// one of its child modules, as full paths from the crate root.
fn paths_named(module: &str, code: &str, children: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let inline_depth = inline_module_depths(code);
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        expand("", &code[at + "crate::".len()..], &mut out);
    }
    for (at, _) in code.match_indices("super::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut rest = &code[at..];
        let mut base: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        // Inside an inline `mod x { ... }`, the first `super` is the file's own module.
        let mut inline = inline_depth[at];
        while let Some(r) = rest.strip_prefix("super::") {
            if inline > 0 {
                inline -= 1;
            } else {
                base.pop();
            }
            rest = r;
        }
        let base = base.iter().map(|s| format!("{s}::")).collect::<String>();
        expand(&base, rest, &mut out);
    }
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(path) = stmt.strip_prefix("pub use ").or_else(|| stmt.strip_prefix("use ")) else { continue };
        let first: String = path.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if children.contains(&first) {
            let base = if module.is_empty() { String::new() } else { format!("{module}::") };
            expand(&base, path, &mut out);
        }
    }
    out
}

/// For each byte of `code`, how many inline `mod NAME { ... }` blocks enclose it.
fn inline_module_depths(code: &str) -> Vec<usize> {
    let mut depths = Vec::with_capacity(code.len());
    let mut braces: Vec<bool> = Vec::new();
    for (i, c) in code.char_indices() {
        match c {
            '{' => {
                let before = code[..i].trim_end();
                let name_start = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |p| p + 1);
                braces.push(before[..name_start].trim_end().ends_with("mod") && name_start < before.len());
            }
            '}' => {
                braces.pop();
            }
            _ => {}
        }
        depths.extend(std::iter::repeat_n(braces.iter().filter(|&&m| m).count(), c.len_utf8()));
    }
    depths
}

/// The module a path lands in: its longest prefix that is a module of the crate.
fn resolve<'a>(path: &str, modules: &'a BTreeSet<Module>) -> Option<&'a Module> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len()).rev().find_map(|n| modules.get(&segments[..n].join("::")))
}

fn layer_of(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

fn rank(layer: &str) -> usize {
    if layer.is_empty() {
        return LAYERS.len();
    }
    LAYERS.iter().position(|&l| l == layer).unwrap_or_else(|| panic!("module tree `{layer}` is in no layer: add it to LAYERS"))
}

/// The problems of a crate given as (path below `src/`, source) pairs: imports that point
/// up a layer, tools that use more than the tool API, and import cycles.
fn problems(files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeSet<Module> = files.iter().map(|(p, _)| module_of(p)).collect();
    let mut deps: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut found = Vec::new();
    for (path, src) in files {
        let module = module_of(path);
        let prefix = if module.is_empty() { String::new() } else { format!("{module}::") };
        let children: BTreeSet<String> = modules
            .iter()
            .filter_map(|m| m.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains("::"))
            .map(String::from)
            .collect();
        let entry = deps.entry(module.clone()).or_default();
        for named in paths_named(&module, &code_of(src), &children) {
            let Some(target) = resolve(&named, &modules) else { continue };
            if *target == module {
                continue;
            }
            let (from, to) = (layer_of(&module), layer_of(target));
            if rank(to) > rank(from) {
                found.push(format!("{path}: `{named}` is in layer `{to}`, above `{from}`"));
            }
            if from == "tools" && to != "tools" && !TOOLS_MAY_USE.contains(&to) {
                found.push(format!("{path}: `{named}`: the built-in tools use only the tool API"));
            }
            entry.insert(target.clone());
        }
    }
    found.extend(cycles(&deps).into_iter().map(|c| format!("import cycle: {}", c.join(" -> "))));
    found
}

/// The strongly connected groups of more than one module (Tarjan's algorithm).
fn cycles(deps: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Search<'a> {
        deps: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a str, (usize, usize)>,
        stack: Vec<&'a str>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, (n, n));
            self.stack.push(v);
            for w in self.deps.get(v).into_iter().flatten() {
                let low = match self.index.get(w.as_str()) {
                    None => {
                        self.visit(w);
                        self.index[w.as_str()].1
                    }
                    Some(&(i, _)) if self.stack.contains(&w.as_str()) => i,
                    Some(_) => continue,
                };
                let e = self.index.get_mut(v).expect("visited");
                e.1 = e.1.min(low);
            }
            if self.index[v].0 == self.index[v].1 {
                let at = self.stack.iter().rposition(|&m| m == v).expect("on the stack");
                let group: Vec<Module> = self.stack.drain(at..).map(String::from).collect();
                if group.len() > 1 {
                    self.found.push(group);
                }
            }
        }
    }
    let mut s = Search { deps, index: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in deps.keys() {
        if !s.index.contains_key(v.as_str()) {
            s.visit(v);
        }
    }
    s.found
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("below src/").to_string_lossy().into_owned();
            out.push((rel, std::fs::read_to_string(&path).expect("a readable source file")));
        }
    }
}

#[test]
fn every_import_points_to_the_same_or_a_lower_layer_and_no_files_form_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    assert!(files.len() > 40, "the crate's sources were found");
    let found = problems(&files);
    assert!(found.is_empty(), "layering problems:\n{}", found.join("\n"));
}

fn crate_of(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect()
}

#[test]
fn the_check_finds_a_cycle_between_files_of_one_layer() {
    let files = crate_of(&[
        ("lib.rs", "pub mod os;"),
        ("os/mod.rs", "pub mod a;\npub mod b;"),
        ("os/a.rs", "use crate::os::b::Thing;"),
        ("os/b.rs", "use crate::os::{a::Other, x};"),
    ]);
    let found = problems(&files);
    assert_eq!(found, vec!["import cycle: os::a -> os::b".to_string()], "{found:?}");
}

#[test]
fn the_check_finds_an_import_from_a_higher_layer_and_ignores_comments_and_strings() {
    let files = crate_of(&[
        ("lib.rs", "pub mod arch;\npub mod engine;\npub mod tools;\npub mod tool;\npub mod os;"),
        ("arch/mod.rs", "// crate::engine::x in a comment\nlet s = \"crate::engine\";\nfn f() { crate::engine::state::go() }"),
        ("engine/mod.rs", "pub mod state;"),
        ("engine/state.rs", "use super::super::arch;"),
        ("tools/mod.rs", "use crate::{tool::Tool, os::appmem};"),
        ("tool.rs", ""),
        ("os/mod.rs", "pub mod appmem;"),
        ("os/appmem.rs", ""),
    ]);
    let found = problems(&files);
    assert!(found.iter().any(|f| f.starts_with("arch/mod.rs: `engine::state::go` is in layer `engine`, above `arch`")), "{found:?}");
    assert!(found.iter().any(|f| f.starts_with("tools/mod.rs: `os::appmem`: the built-in tools use only the tool API")), "{found:?}");
    assert!(found.iter().any(|f| f.starts_with("import cycle:")), "arch -> engine::state -> arch: {found:?}");
    assert_eq!(found.len(), 3, "{found:?}");
}
