//! The crate's layering, as a test: no two top-level modules of `dockertrace/src` may reach each
//! other, directly or through others (an import circle), and the offline half — recordings,
//! imports, reports, comparisons, rendering — never imports the loader that embeds the eBPF
//! object (`tracer`). Reads the sources: `crate::<module>` paths and `use crate::{…}` groups,
//! outside `#[cfg(test)]` modules and comments.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (None for lib.rs and main.rs).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// The top-level modules a file's non-test code names through `crate::`.
fn deps(text: &str) -> BTreeSet<String> {
    // Test modules (`#[cfg(test)] mod …`) come last in each file.
    let code = text.split("#[cfg(test)]\nmod").next().unwrap_or("");
    let code: String =
        code.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut out = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of a `crate::{a::…, b, c::{…}}` group.
            let (mut depth, mut token) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(token.trim()));
                        token.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    token.push(c);
                }
            }
            out.insert(ident(token.trim()));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|d| !d.is_empty());
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(top) = top_module(&src, f) else { continue };
        let d = deps(&fs::read_to_string(f).unwrap());
        g.entry(top.clone()).or_default().extend(d.into_iter().filter(|d| *d != top));
    }
    let tops: BTreeSet<String> = g.keys().cloned().collect();
    for d in g.values_mut() {
        d.retain(|m| tops.contains(m));
    }
    g
}

/// Every module `from` reaches.
fn reach(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(m) = todo.pop() {
        for d in g.get(&m).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn no_module_reaches_back_to_itself() {
    let g = graph();
    assert!(g.len() > 20, "the source scan found only {:?}", g.keys());
    let circles: Vec<&String> = g.keys().filter(|m| reach(&g, m).contains(*m)).collect();
    assert!(circles.is_empty(), "modules in an import circle: {circles:?}\n{g:#?}");
}

#[test]
fn the_offline_half_never_imports_the_loader() {
    let g = graph();
    for m in ["recording", "import", "compare", "summary", "aggregate", "render", "counters", "journeys"] {
        assert!(g.contains_key(m), "no module {m}");
        let r = reach(&g, m);
        assert!(!r.contains("tracer"), "{m} reaches the loader through {r:?}");
    }
    assert!(!reach(&g, "teardown").contains("modes"), "teardown imports modes");
}

#[test]
fn the_scan_sees_imports() {
    assert_eq!(
        deps("use crate::{a::b, c, d::{e, f}};\nfn x() { crate::g::h(); } // crate::i\n#[cfg(test)]\nmod t { use crate::j; }"),
        ["a", "c", "d", "g"].into_iter().map(String::from).collect()
    );
}
