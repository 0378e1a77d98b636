//! Error chains as one line.

/// An error and its sources as one line (`a: b: c`), without a source that only repeats what
/// its parent already said (`No such file or directory (os error 2)` twice).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut parent = s.clone();
    let mut src = e.source();
    while let Some(e) = src {
        let text = e.to_string();
        if !text.is_empty() && !parent.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        parent = text;
        src = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn chains_drop_repeated_sources() {
        let io = "No such file or directory (os error 2)";
        let e = E(format!("cannot open x: {io}"), Some(Box::new(E(io.into(), None))));
        assert_eq!(chain(&e), format!("cannot open x: {io}"));
        let e = E("load".into(), Some(Box::new(E("map".into(), Some(Box::new(E("EPERM".into(), None)))))));
        assert_eq!(chain(&e), "load: map: EPERM");
    }
}
