//! Perf-style event selection: `--events net:*,skb:kfree_skb,!net:napi_gro_*`.
//!
//! A spec is a comma-separated list of glob patterns over `category:name`. A pattern without
//! `:` matches the name in any category. Patterns starting with `!` exclude, and exclusions
//! apply after all inclusions whatever their order.

use crate::kernel::tracefs::TracepointId;

/// The events traced when the user does not pick any: the `net:*` tracepoints and the drops
/// (`skb:kfree_skb`, see `crate::drops`). `--events 'net:*'` leaves the drops out (they still end
/// journeys, unreported).
pub const DEFAULT_EVENTS: &str = "net:*,skb:kfree_skb";

/// A bad `--events` spec. Displays as one line fit to show to users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// Nothing to select.
    #[error("empty event selection: give patterns such as `net:*` or `skb:kfree_skb`")]
    EmptySpec,
    /// `a,,b`, a trailing comma, or a lone `!`.
    #[error("empty pattern in event selection `{spec}`")]
    EmptyPattern {
        /// The whole spec.
        spec: String,
    },
    /// A pattern that cannot be a tracepoint glob.
    #[error("bad event pattern `{pattern}`: {reason}")]
    BadPattern {
        /// The offending pattern.
        pattern: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Only exclusions: nothing would be selected.
    #[error("event selection `{spec}` only excludes: add what to include, e.g. `net:*,{spec}`")]
    OnlyExcludes {
        /// The whole spec.
        spec: String,
    },
}

/// Shell-style glob match: `*` (any run, also empty), `?` (one character), `[abc]`, `[a-z]`,
/// `[!a-z]` / `[^a-z]` (negated class). Any other character matches itself; an unclosed `[`
/// matches a literal `[`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it absorbed up to).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => match class_match(&p[pi..], t[ti]) {
                Some((true, len)) => Some(len),
                Some((false, _)) => None,
                None => (t[ti] == '[').then_some(1),
            },
            Some(&c) => (c == t[ti]).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(len), _) => {
                pi += len;
                ti += 1;
            }
            (None, Some((sp, st))) => {
                // Let the last `*` absorb one more character and retry.
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[0] == '['`. Returns (matched, pattern length
/// of the class), or None if the class is not closed.
fn class_match(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = matches!(p.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&hi| hi != ']') {
            let hi = p[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

/// One pattern of a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    /// As written (without the `!`), for messages.
    text: String,
    /// Category glob; None matches every category.
    category: Option<String>,
    name: String,
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, SelectError> {
        let bad = |reason| SelectError::BadPattern { pattern: text.to_string(), reason };
        if text.chars().any(|c| c.is_whitespace()) {
            return Err(bad("patterns cannot contain spaces"));
        }
        if text.starts_with('!') {
            return Err(bad("`!` may only appear once, at the start"));
        }
        let (category, name) = match text.split_once(':') {
            Some((c, n)) => {
                if c.is_empty() {
                    return Err(bad("empty category before `:`"));
                }
                (Some(c), n)
            }
            None => (None, text),
        };
        if name.is_empty() {
            return Err(bad("empty tracepoint name after `:`"));
        }
        if name.contains(':') {
            return Err(bad("more than one `:`"));
        }
        for part in category.iter().chain([&name]) {
            if !classes_closed(part) {
                return Err(bad("unclosed `[` character class"));
            }
        }
        Ok(Pattern { text: text.to_string(), category: category.map(str::to_string), name: name.to_string() })
    }

    fn matches(&self, category: &str, name: &str) -> bool {
        self.category.as_deref().is_none_or(|c| glob_match(c, category)) && glob_match(&self.name, name)
    }
}

/// Whether every `[` in a glob opens a closed class.
fn classes_closed(glob: &str) -> bool {
    let p: Vec<char> = glob.chars().collect();
    let mut i = 0;
    while i < p.len() {
        if p[i] == '[' {
            match class_match(&p[i..], '\0') {
                Some((_, len)) => i += len,
                None => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// A parsed `--events` spec. Displays as the spec with spaces removed (`net:*,!net:napi_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSelector {
    /// The patterns as written, trimmed, joined by `,`.
    spec: String,
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl EventSelector {
    /// Parses a comma-separated list of patterns (`net:*,!net:napi_gro_*,kfree_skb`).
    /// Spaces around patterns are ignored.
    pub fn parse(spec: &str) -> Result<Self, SelectError> {
        if spec.trim().is_empty() {
            return Err(SelectError::EmptySpec);
        }
        let (mut include, mut exclude) = (Vec::new(), Vec::new());
        let mut normalized = Vec::new();
        for raw in spec.split(',') {
            let raw = raw.trim();
            normalized.push(raw);
            let (list, text) = match raw.strip_prefix('!') {
                Some(rest) => (&mut exclude, rest),
                None => (&mut include, raw),
            };
            if text.is_empty() {
                return Err(SelectError::EmptyPattern { spec: spec.to_string() });
            }
            list.push(Pattern::parse(text)?);
        }
        if include.is_empty() {
            return Err(SelectError::OnlyExcludes { spec: spec.trim().to_string() });
        }
        Ok(EventSelector { spec: normalized.join(","), include, exclude })
    }

    /// Whether `category:name` is selected: some inclusion matches and no exclusion does.
    pub fn matches(&self, category: &str, name: &str) -> bool {
        self.include.iter().any(|p| p.matches(category, name))
            && !self.exclude.iter().any(|p| p.matches(category, name))
    }

    /// The selected tracepoints of `all`, in `all`'s order.
    pub fn select<'a>(&self, all: &'a [TracepointId]) -> Vec<&'a TracepointId> {
        all.iter().filter(|tp| self.matches(&tp.category, &tp.name)).collect()
    }

    /// Inclusion patterns (as written) that match no tracepoint of `all`, for warnings such as
    /// "no tracepoint matches `net:foo*`". A pattern whose matches are all excluded still
    /// counts as matching.
    pub fn unmatched_patterns(&self, all: &[TracepointId]) -> Vec<String> {
        self.include
            .iter()
            .filter(|p| !all.iter().any(|tp| p.matches(&tp.category, &tp.name)))
            .map(|p| p.text.clone())
            .collect()
    }
}

impl Default for EventSelector {
    /// The selector of [`DEFAULT_EVENTS`].
    fn default() -> Self {
        EventSelector::parse(DEFAULT_EVENTS).expect("the default event selection parses")
    }
}

impl std::fmt::Display for EventSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spec)
    }
}

impl std::str::FromStr for EventSelector {
    type Err = SelectError;

    fn from_str(spec: &str) -> Result<Self, SelectError> {
        EventSelector::parse(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_basics() {
        let yes = [
            ("", ""),
            ("*", ""),
            ("*", "anything"),
            ("net_dev_*", "net_dev_xmit"),
            ("net_dev_*", "net_dev_"),
            ("*_entry", "netif_receive_skb_entry"),
            ("*skb*", "netif_receive_skb_list_exit"),
            ("net?dev", "net_dev"),
            ("a*b*c", "abc"),
            ("a*b*c", "aXbYbZc"),
            ("**x", "x"),
            ("*a*a*a*", "aaa"),
            ("kfree_skb", "kfree_skb"),
            ("é*", "été"),
            ("?", "é"),
        ];
        for (p, t) in yes {
            assert!(glob_match(p, t), "{p:?} should match {t:?}");
        }
        let no = [
            ("", "x"),
            ("x", ""),
            ("?", ""),
            ("net_dev_*", "net_dev"),
            ("net_dev_*", "xnet_dev_xmit"),
            ("*_entry", "netif_receive_skb_entry_x"),
            ("a*b*c", "aXbYbZ"),
            ("kfree_skb", "kfree_skbx"),
            ("*a*a*a*", "aa"),
        ];
        for (p, t) in no {
            assert!(!glob_match(p, t), "{p:?} should not match {t:?}");
        }
    }

    #[test]
    fn glob_classes() {
        assert!(glob_match("netif_rx_[ae]*", "netif_rx_entry"));
        assert!(glob_match("netif_rx_[ae]*", "netif_rx_exit"));
        assert!(!glob_match("netif_rx_[ae]*", "netif_rx_foo"));
        assert!(glob_match("v[0-9]", "v7"));
        assert!(!glob_match("v[0-9]", "vx"));
        assert!(glob_match("v[a-cx-z0-1]", "vy"));
        assert!(glob_match("v[a-cx-z0-1]", "v1"));
        assert!(!glob_match("v[a-cx-z0-1]", "vd"));
        assert!(glob_match("[!a]*", "bcd"));
        assert!(!glob_match("[!a]*", "abc"));
        assert!(glob_match("[^a-m]x", "zx"));
        assert!(!glob_match("[^a-m]x", "cx"));
        // `]` first in a class is literal; `-` at the end is literal.
        assert!(glob_match("[]a]", "]"));
        assert!(glob_match("[a-]", "-"));
        assert!(!glob_match("[a-]", "b"));
        // Unclosed `[` is literal.
        assert!(glob_match("a[b", "a[b"));
        assert!(!glob_match("a[b", "ab"));
        assert!(glob_match("*[_]exit", "napi_gro_frags_exit"));
        assert!(!glob_match("[ab]", ""));
    }

    #[test]
    fn glob_backtracking_is_not_exponential() {
        let text = "a".repeat(200);
        let pattern = format!("{}b", "a*".repeat(30));
        assert!(!glob_match(&pattern, &text));
    }

    fn ids() -> Vec<TracepointId> {
        [
            ("net", "napi_gro_frags_entry"),
            ("net", "napi_gro_receive_entry"),
            ("net", "net_dev_queue"),
            ("net", "net_dev_start_xmit"),
            ("net", "net_dev_xmit"),
            ("net", "netif_receive_skb"),
            ("net", "netif_rx"),
            ("skb", "consume_skb"),
            ("skb", "kfree_skb"),
            ("sock", "inet_sock_set_state"),
        ]
        .into_iter()
        .map(|(c, n)| TracepointId::new(c, n))
        .collect()
    }

    fn names(sel: &EventSelector, all: &[TracepointId]) -> Vec<String> {
        sel.select(all).iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn selects_with_includes_and_excludes() {
        let all = ids();
        let sel = EventSelector::parse("net:*,!net:napi_gro_*").expect("parse");
        assert_eq!(
            names(&sel, &all),
            [
                "net:net_dev_queue",
                "net:net_dev_start_xmit",
                "net:net_dev_xmit",
                "net:netif_receive_skb",
                "net:netif_rx"
            ]
        );
        // Exclusions apply after inclusions whatever the order.
        let sel2 = EventSelector::parse("!net:napi_gro_*,net:*").expect("parse");
        assert_eq!(names(&sel2, &all), names(&sel, &all));

        let sel = EventSelector::parse("skb:kfree_skb, net:net_dev_*").expect("parse");
        assert_eq!(
            names(&sel, &all),
            ["net:net_dev_queue", "net:net_dev_start_xmit", "net:net_dev_xmit", "skb:kfree_skb"]
        );
        assert!(sel.matches("skb", "kfree_skb"));
        assert!(!sel.matches("skb", "consume_skb"));
        assert!(!sel.matches("skbx", "kfree_skb"));
    }

    #[test]
    fn pattern_without_category_matches_any_category() {
        let all = ids();
        let sel = EventSelector::parse("*_skb").expect("parse");
        assert_eq!(names(&sel, &all), ["net:netif_receive_skb", "skb:consume_skb", "skb:kfree_skb"]);
        let sel = EventSelector::parse("*:kfree_skb").expect("parse");
        assert_eq!(names(&sel, &all), ["skb:kfree_skb"]);
        let sel = EventSelector::parse("s*:*,!consume_skb").expect("parse");
        assert_eq!(names(&sel, &all), ["skb:kfree_skb", "sock:inet_sock_set_state"]);
        let sel = EventSelector::parse("*,![ns]*:*").expect("parse");
        assert!(names(&sel, &all).is_empty());
    }

    #[test]
    fn default_selects_net_and_drops() {
        let all = ids();
        let parsed = EventSelector::parse(DEFAULT_EVENTS).expect("default");
        assert_eq!(parsed, EventSelector::default());
        let picked = names(&parsed, &all);
        assert!(picked.iter().all(|n| n.starts_with("net:") || n == "skb:kfree_skb"), "{picked:?}");
        assert!(picked.iter().any(|n| n == "skb:kfree_skb"));
        // `net:*` opts out of the drops.
        let net: EventSelector = "net:*".parse().expect("FromStr");
        assert!(names(&net, &all).iter().all(|n| n.starts_with("net:")));
        assert_eq!(EventSelector::default().to_string(), DEFAULT_EVENTS);
    }

    #[test]
    fn displays_the_normalized_spec() {
        let sel = EventSelector::parse(" net:* , !net:napi_gro_*,kfree_skb ").expect("parse");
        assert_eq!(sel.to_string(), "net:*,!net:napi_gro_*,kfree_skb");
        let again = EventSelector::parse(&sel.to_string()).expect("reparse");
        assert_eq!(again, sel);
    }

    #[test]
    fn reports_unmatched_include_patterns() {
        let all = ids();
        let sel =
            EventSelector::parse("net:foo*,skb:kfree_skb,bar,net:napi_*,!net:napi_*,!nope").expect("parse");
        assert_eq!(sel.unmatched_patterns(&all), ["net:foo*", "bar"]);
        assert!(sel.unmatched_patterns(&[]).len() == 4);
        let sel = EventSelector::parse("net:*").expect("parse");
        assert!(sel.unmatched_patterns(&all).is_empty());
    }

    #[test]
    fn bad_specs_are_errors() {
        assert_eq!(EventSelector::parse(""), Err(SelectError::EmptySpec));
        assert_eq!(EventSelector::parse("  "), Err(SelectError::EmptySpec));
        for spec in ["net:*,", ",net:*", "net:*,,skb:*", "net:*,!", "net:*, ,skb:*"] {
            assert!(matches!(EventSelector::parse(spec), Err(SelectError::EmptyPattern { .. })), "{spec:?}");
        }
        for spec in ["net:", ":foo", "a:b:c", "net:[a-", "net:x y", "!!net:x", "[net:x"] {
            let e = EventSelector::parse(spec).expect_err(spec);
            assert!(matches!(e, SelectError::BadPattern { .. }), "{spec:?}: {e:?}");
            assert!(!e.to_string().contains('\n'));
        }
        let e = EventSelector::parse("!net:napi_*").expect_err("only excludes");
        assert!(matches!(e, SelectError::OnlyExcludes { .. }));
        assert_eq!(
            e.to_string(),
            "event selection `!net:napi_*` only excludes: add what to include, e.g. `net:*,!net:napi_*`"
        );
    }
}
