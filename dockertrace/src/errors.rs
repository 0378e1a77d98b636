//! Error text shared by every layer: one line per error, its sources after it, none repeated.

/// An error and its sources, `a: b: c`, on one line. A source is left out when its text says
/// nothing new: when it equals the previous source, or the text so far already contains it
/// (many errors put their source's message into their own, e.g. `cannot read x: {source}`).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut previous = out.clone();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        let text = text.trim();
        if !text.is_empty() && text != previous && !out.contains(text) {
            out.push_str(": ");
            out.push_str(text);
        }
        previous = text.to_owned();
        source = s.source();
    }
    one_line(&out)
}

/// An `anyhow` error as one line: [`chain`] over its context and sources.
pub fn describe(e: &anyhow::Error) -> String {
    chain(e.as_ref())
}

/// Collapses whitespace runs (newlines included), so a message stays on one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and an optional source.
    #[derive(Debug)]
    struct E(String, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn e(parts: &[&str]) -> E {
        parts.iter().rev().fold(None, |inner, p| Some(E((*p).to_owned(), inner.map(Box::new)))).unwrap()
    }

    #[test]
    fn sources_follow_their_parent() {
        assert_eq!(chain(&e(&["connecting", "connection refused"])), "connecting: connection refused");
        assert_eq!(chain(&e(&["a", "b", "c"])), "a: b: c");
        assert_eq!(chain(&e(&["alone"])), "alone");
    }

    #[test]
    fn a_source_repeating_its_parent_is_dropped() {
        let enoent = "No such file or directory (os error 2)";
        assert_eq!(chain(&e(&[enoent, enoent])), enoent);
        assert_eq!(chain(&e(&["cannot open x", enoent, enoent])), format!("cannot open x: {enoent}"));
        // The parent already quotes its source.
        assert_eq!(
            chain(&e(&[&format!("cannot read x: {enoent}"), enoent])),
            format!("cannot read x: {enoent}")
        );
        // A source the text so far contains, deeper down.
        assert_eq!(
            chain(&e(&["request failed: timed out", "hyper", "timed out"])),
            "request failed: timed out: hyper"
        );
    }

    #[test]
    fn the_chain_is_one_line() {
        assert_eq!(chain(&e(&["a\n  b", "c\td"])), "a b: c d");
        assert_eq!(one_line("a\n  b\tc\n"), "a b c");
        assert_eq!(chain(&e(&["a", " ", "b"])), "a: b");
    }

    #[test]
    fn io_errors_in_an_anyhow_chain() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let err = anyhow::Error::new(io).context(format!("cannot open /x: {text}"));
        assert_eq!(chain(err.as_ref()), format!("cannot open /x: {text}"));
    }
}
