//! The import rules of ARCHITECTURE.md, checked on the source: no import cycle between the
//! top-level modules of `src/`, none between the files of one module, and clap only in
//! `src/cli/`.
//!
//! Every `.rs` file under `src/` is read (comments and string literals removed), and every
//! path it names is resolved to the file that defines it: `use` trees (`use crate::a::{b,
//! c::d}`), paths in code (`crate::layer::source_date_epoch()`), `super::`/`self::` paths
//! (inline `mod tests { ... }` blocks are followed) and paths through a child module
//! (`exec::run` in a `mod.rs`). An edge between two top-level modules is any such path from a
//! file of one to the other. An edge between two files of one module is a path from one to
//! the other where neither is the other's ancestor: a module's root file (`mod.rs`) is its
//! facade, which declares, re-exports and calls its children, and whose shared items the
//! children use; the rule is about siblings (and their descendants) reaching each other.
//!
//! A failure prints each cycle with the line that makes every edge of it.

#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside the crate (`["executor", "run"]`; empty for the crate root).
type ModulePath = Vec<String>;

/// One source file.
struct SourceFile {
    /// Its path relative to the repository, for messages.
    shown: String,
    /// The module it defines.
    module: ModulePath,
    /// Its text with comments and string literals blanked (same lines).
    code: String,
}

/// Why one file depends on another: the first line that names it.
#[derive(Clone)]
struct Evidence {
    line: usize,
    path: String,
}

fn source_files() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    collect(&root.join("src"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(root.join("src")).unwrap().to_path_buf();
            let text = std::fs::read_to_string(&path).unwrap();
            SourceFile {
                shown: format!("src/{}", relative.display()),
                module: module_of(&relative),
                code: blank_comments_and_strings(&text),
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `executor/run.rs` → `executor::run`, `executor/mod.rs` → `executor`, `lib.rs` → root.
fn module_of(relative: &Path) -> ModulePath {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

/// The text with comments, string and character literals replaced by spaces (newlines
/// kept, so line numbers stay right).
fn blank_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && is_raw_string(&chars, i) {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            let start = i;
            i += 2 + hashes;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|&c| c == '#') {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.extend(chars[start..i.min(chars.len())].iter().map(|&c| blank(c)));
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'); otherwise a lifetime.
            let end = if next == Some('\\') {
                chars[i + 3..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map(|at| i + 3 + at)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_raw_string(chars: &[char], at: usize) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    // `r"..."`, `br"..."`, not the end of an identifier such as `for"`.
    let start = if at > 0 && chars[at - 1] == 'b' {
        at - 1
    } else {
        at
    };
    let before_is_ident = start > 0 && is_ident(chars[start - 1]);
    let hashes = chars[at + 1..].iter().take_while(|&&c| c == '#').count();
    !before_is_ident && chars.get(at + 1 + hashes) == Some(&'"')
}

/// The paths a file names, with the line and the module (inline modules included) they are
/// written in.
fn named_paths(file: &SourceFile) -> Vec<(usize, ModulePath, Vec<String>)> {
    let mut found = Vec::new();
    // The inline module stack: (name, brace depth at which its body opened).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let tokens = tokenize(&file.code);
    let mut index = 0;
    while index < tokens.len() {
        let (line, token) = &tokens[index];
        let here = |inline: &[(String, usize)]| {
            let mut module = file.module.clone();
            module.extend(inline.iter().map(|(name, _)| name.clone()));
            module
        };
        match token.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, at)| *at == depth + 1) {
                    inline.pop();
                }
            }
            "mod" => {
                if let (Some((_, name)), Some((_, brace))) =
                    (tokens.get(index + 1), tokens.get(index + 2))
                {
                    if brace == "{" {
                        inline.push((name.clone(), depth + 1));
                        depth += 1;
                        index += 3;
                        continue;
                    }
                }
            }
            "use" => {
                let end = tokens[index..]
                    .iter()
                    .position(|(_, token)| token == ";")
                    .map_or(tokens.len(), |at| index + at);
                let tree: Vec<&str> = tokens[index + 1..end]
                    .iter()
                    .map(|(_, token)| token.as_str())
                    .collect();
                let module = here(&inline);
                for path in expand_use_tree(&tree) {
                    found.push((*line, module.clone(), path));
                }
                index = end + 1;
                continue;
            }
            _ => {}
        }
        // A path in code: identifiers joined by `::`.
        if is_identifier(token) && tokens.get(index + 1).is_some_and(|(_, t)| t == "::") {
            let preceded_by_colons = index > 0 && tokens[index - 1].1 == "::";
            if !preceded_by_colons {
                let mut path = vec![token.clone()];
                let mut at = index + 1;
                while tokens.get(at).is_some_and(|(_, t)| t == "::")
                    && tokens.get(at + 1).is_some_and(|(_, t)| is_identifier(t))
                {
                    path.push(tokens[at + 1].1.clone());
                    at += 2;
                }
                found.push((*line, here(&inline), path));
                index = at;
                continue;
            }
        }
        index += 1;
    }
    found
}

/// Identifiers, `::` and single punctuation characters, with their line.
fn tokenize(code: &str) -> Vec<(usize, String)> {
    let mut tokens = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_alphanumeric() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push((number + 1, chars[start..i].iter().collect()));
            } else if c == ':' && chars.get(i + 1) == Some(&':') {
                tokens.push((number + 1, "::".to_owned()));
                i += 2;
            } else {
                if !c.is_whitespace() {
                    tokens.push((number + 1, c.to_string()));
                }
                i += 1;
            }
        }
    }
    tokens
}

fn is_identifier(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// `crate :: { a , b :: { self , c } }` → `crate::a`, `crate::b`, `crate::b::c`.
fn expand_use_tree(tokens: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    expand_into(tokens, &[], &mut out);
    out
}

fn expand_into(tokens: &[&str], prefix: &[String], out: &mut Vec<Vec<String>>) {
    // Split at top-level commas.
    let mut items: Vec<&[&str]> = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (at, token) in tokens.iter().enumerate() {
        match *token {
            "{" => depth += 1,
            "}" => depth -= 1,
            "," if depth == 0 => {
                items.push(&tokens[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&tokens[start..]);
    for item in items {
        let mut path = prefix.to_vec();
        let mut at = 0;
        while at < item.len() {
            match item[at] {
                "::" => at += 1,
                "{" => {
                    let close = item.iter().rposition(|t| *t == "}").unwrap_or(item.len());
                    expand_into(&item[at + 1..close], &path, out);
                    path.clear();
                    break;
                }
                "as" | "*" => break,
                "self" if at == 0 && !prefix.is_empty() => at += 1,
                word => {
                    path.push(word.to_owned());
                    at += 1;
                }
            }
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
}

/// The module a path names, made absolute from `module` (where it is written), or `None`
/// for paths outside the crate (`std::`, `serde::`, local items).
fn absolute(
    path: &[String],
    module: &[String],
    modules: &BTreeSet<ModulePath>,
) -> Option<ModulePath> {
    let (mut base, rest): (ModulePath, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (module.to_vec(), &path[1..]),
        Some("super") => {
            let mut base = module.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|part| part == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        Some(first) => {
            let mut child = module.to_vec();
            child.push(first.to_owned());
            if !modules.contains(&child) {
                return None;
            }
            (module.to_vec(), path)
        }
        None => return None,
    };
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The file (module path of a file) that defines `target`: its longest prefix that is a
/// file.
fn defining_file(target: &[String], files: &BTreeSet<ModulePath>) -> Option<ModulePath> {
    (0..=target.len())
        .rev()
        .map(|len| target[..len].to_vec())
        .find(|prefix| files.contains(prefix))
}

/// Every module (files and inline modules) of the crate, for resolving relative paths.
fn all_modules(files: &[SourceFile]) -> BTreeSet<ModulePath> {
    let mut modules = BTreeSet::new();
    for file in files {
        modules.insert(file.module.clone());
        let tokens = tokenize(&file.code);
        for window in tokens.windows(3) {
            if window[0].1 == "mod" && window[2].1 == "{" {
                let mut inline = file.module.clone();
                inline.push(window[1].1.clone());
                modules.insert(inline);
            }
        }
    }
    modules
}

type Graph<N> = BTreeMap<N, BTreeMap<N, (String, Evidence)>>;

/// The two graphs: top-level modules, and files (within one top-level module).
fn graphs(files: &[SourceFile]) -> (Graph<String>, Graph<ModulePath>) {
    let file_modules: BTreeSet<ModulePath> = files.iter().map(|f| f.module.clone()).collect();
    let modules = all_modules(files);
    let mut top: Graph<String> = BTreeMap::new();
    let mut within: Graph<ModulePath> = BTreeMap::new();
    for file in files {
        for (line, module, path) in named_paths(file) {
            let Some(target) = absolute(&path, &module, &modules) else {
                continue;
            };
            let Some(defining) = defining_file(&target, &file_modules) else {
                continue;
            };
            if defining == file.module || file.module.is_empty() || defining.is_empty() {
                continue;
            }
            let evidence = Evidence {
                line,
                path: path.join("::"),
            };
            if file.module[0] != defining[0] {
                top.entry(file.module[0].clone())
                    .or_default()
                    .entry(defining[0].clone())
                    .or_insert_with(|| (file.shown.clone(), evidence.clone()));
            } else if !defining.starts_with(&file.module) && !file.module.starts_with(&defining) {
                within
                    .entry(file.module.clone())
                    .or_default()
                    .entry(defining)
                    .or_insert_with(|| (file.shown.clone(), evidence));
            }
        }
    }
    (top, within)
}

/// One cycle through each strongly connected component of more than one node (the shortest
/// through its first node), and the whole component.
fn cycles<N: Ord + Clone>(graph: &Graph<N>) -> Vec<(Vec<N>, BTreeSet<N>)> {
    let nodes: BTreeSet<N> = graph
        .iter()
        .flat_map(|(from, to)| std::iter::once(from.clone()).chain(to.keys().cloned()))
        .collect();
    let reach = |from: &N| -> BTreeSet<N> {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from.clone()];
        while let Some(node) = pending.pop() {
            for next in graph.get(&node).into_iter().flat_map(BTreeMap::keys) {
                if seen.insert(next.clone()) {
                    pending.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found: Vec<(Vec<N>, BTreeSet<N>)> = Vec::new();
    let mut covered = BTreeSet::new();
    for node in &nodes {
        if covered.contains(node) || !reach(node).contains(node) {
            continue;
        }
        // The shortest way back to `node` (breadth first).
        let mut previous: BTreeMap<N, N> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([node.clone()]);
        let mut closing = None;
        while let Some(current) = queue.pop_front() {
            for next in graph.get(&current).into_iter().flat_map(BTreeMap::keys) {
                if next == node {
                    closing = Some(current.clone());
                    break;
                }
                if !previous.contains_key(next) {
                    previous.insert(next.clone(), current.clone());
                    queue.push_back(next.clone());
                }
            }
            if closing.is_some() {
                break;
            }
        }
        let mut cycle = vec![node.clone()];
        let mut at = closing.expect("the node reaches itself");
        while &at != node {
            cycle.push(at.clone());
            at = previous[&at].clone();
        }
        cycle[1..].reverse();
        // Everything on a cycle with `node` is reported once, with it.
        let component: BTreeSet<N> = reach(node)
            .into_iter()
            .filter(|other| reach(other).contains(node))
            .collect();
        covered.extend(component.iter().cloned());
        found.push((cycle, component));
    }
    found
}

fn describe<N: Ord + Clone>(
    graph: &Graph<N>,
    (cycle, component): &(Vec<N>, BTreeSet<N>),
    name: impl Fn(&N) -> String,
) -> String {
    let mut text = cycle.iter().map(&name).collect::<Vec<_>>().join(" -> ");
    text.push_str(&format!(" -> {}", name(&cycle[0])));
    if component.len() > cycle.len() {
        let all: Vec<String> = component.iter().map(&name).collect();
        text.push_str(&format!(" (and more cycles among {})", all.join(", ")));
    }
    for (at, from) in cycle.iter().enumerate() {
        let to = &cycle[(at + 1) % cycle.len()];
        let (file, evidence) = &graph[from][to];
        text.push_str(&format!(
            "\n    {} -> {}: {}:{} names {}",
            name(from),
            name(to),
            file,
            evidence.line,
            evidence.path
        ));
    }
    text
}

#[test]
fn no_import_cycle_between_modules_or_files() {
    let files = source_files();
    let (top, within) = graphs(&files);
    let mut problems = Vec::new();
    for cycle in cycles(&top) {
        problems.push(format!(
            "module cycle: {}",
            describe(&top, &cycle, Clone::clone)
        ));
    }
    for cycle in cycles(&within) {
        problems.push(format!(
            "file cycle: {}",
            describe(&within, &cycle, |module| module.join("::"))
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn clap_is_used_only_in_the_cli() {
    let mut problems = Vec::new();
    for file in source_files() {
        if file.module.first().is_some_and(|first| first == "cli") {
            continue;
        }
        for (line, _, path) in named_paths(&file) {
            if path.first().is_some_and(|first| first == "clap") {
                problems.push(format!("{}:{line}: {}", file.shown, path.join("::")));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "clap outside src/cli/ (the CLI maps its own value enums to library types):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_finds_a_cycle_and_names_its_lines() {
    let file = |shown: &str, module: &[&str], text: &str| SourceFile {
        shown: shown.to_owned(),
        module: module.iter().map(|part| (*part).to_owned()).collect(),
        code: blank_comments_and_strings(text),
    };
    let files = [
        file(
            "src/a/mod.rs",
            &["a"],
            "pub mod x;\npub mod y;\npub use x::X;\n",
        ),
        file(
            "src/a/x.rs",
            &["a", "x"],
            "// use super::z;\nuse super::{y::Y, X as _};\nconst S: &str = \"crate::b::f\";\n",
        ),
        file(
            "src/a/y.rs",
            &["a", "y"],
            "pub struct Y;\nfn f() { crate::b::g(); }\n#[cfg(test)]\nmod tests {\n    use super::super::x;\n}\n",
        ),
        file("src/b.rs", &["b"], "pub fn g() { crate::a::x::h(); }\n"),
    ];
    let (top, within) = graphs(&files);
    let top_cycles = cycles(&top);
    assert_eq!(top_cycles.len(), 1);
    let text = describe(&top, &top_cycles[0], Clone::clone);
    assert!(text.starts_with("a -> b -> a"), "{text}");
    assert!(text.contains("src/a/y.rs:2 names crate::b::g"), "{text}");
    assert!(text.contains("src/b.rs:1 names crate::a::x::h"), "{text}");
    // x -> y through the use tree, y -> x through its test module's super::super; the
    // comment and the string name nothing; mod.rs re-exporting x is not an edge.
    let file_cycles = cycles(&within);
    assert_eq!(file_cycles.len(), 1);
    let text = describe(&within, &file_cycles[0], |module| module.join("::"));
    assert!(text.contains("src/a/x.rs:2 names super::y::Y"), "{text}");
    assert!(
        text.contains("src/a/y.rs:5 names super::super::x"),
        "{text}"
    );
}
