//! JUnit XML for `dockertrace diff --junit FILE`: one test suite per compared mode, one test
//! case per guarded property (`--fail-on`), a failure carrying the reasons and the mode's whole
//! diff. CI systems (GitHub's test reporters, GitLab, Jenkins) show each mode × property as a
//! test of its own.
use std::fmt::Write as _;

/// One mode × guarded property.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The mode (the test suite).
    pub mode: String,
    /// The guarded property, as `--fail-on` names it (`hops`, `hop-latency`, ...).
    pub property: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    /// The reasons (one line each) and the mode's diff as text.
    Failed {
        reasons: Vec<String>,
        diff: String,
    },
    /// Not compared (the mode is missing from one recording), with why.
    Skipped(String),
}

/// Text for XML: the five special characters escaped; characters XML 1.0 cannot hold (control
/// characters other than tab and line breaks) shown as `\xNN`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// The JUnit document: suites in the order their modes first appear.
pub fn render(cases: &[Case]) -> String {
    let count = |f: &dyn Fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count();
    let failed = |c: &Case| matches!(c.outcome, Outcome::Failed { .. });
    let skipped = |c: &Case| matches!(c.outcome, Outcome::Skipped(_));
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"dockertrace diff\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">",
        cases.len(),
        count(&failed),
        count(&skipped)
    );
    let mut modes: Vec<&str> = Vec::new();
    for c in cases {
        if !modes.contains(&c.mode.as_str()) {
            modes.push(&c.mode);
        }
    }
    for mode in modes {
        let suite: Vec<&Case> = cases.iter().filter(|c| c.mode == mode).collect();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">",
            escape(mode),
            suite.len(),
            suite.iter().filter(|c| failed(c)).count(),
            suite.iter().filter(|c| skipped(c)).count()
        );
        for c in suite {
            case(&mut s, c);
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

fn case(s: &mut String, c: &Case) {
    let _ = write!(
        s,
        "    <testcase classname=\"dockertrace.{}\" name=\"{}\"",
        escape(&c.mode),
        escape(&c.property)
    );
    match &c.outcome {
        Outcome::Passed => s.push_str("/>\n"),
        Outcome::Skipped(why) => {
            let _ = writeln!(s, ">\n      <skipped message=\"{}\"/>\n    </testcase>", escape(why));
        }
        Outcome::Failed { reasons, diff } => {
            let _ = writeln!(
                s,
                ">\n      <failure type=\"{}\" message=\"{}\">{}\n{}</failure>\n    </testcase>",
                escape(&c.property),
                escape(&reasons.join("; ")),
                escape(&reasons.join("\n")),
                escape(diff)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(mode: &str, property: &str, outcome: Outcome) -> Case {
        Case { mode: mode.into(), property: property.into(), outcome }
    }

    #[test]
    fn suites_per_mode_cases_per_property() {
        let xml = render(&[
            case("bridge", "hops", Outcome::Passed),
            case(
                "bridge",
                "hop-latency",
                Outcome::Failed {
                    reasons: vec!["bridge: request one-way time p50 4.5 µs → 9 µs (+100.0%)".into()],
                    diff: "  hop ladder request: the same 4 hops\n".into(),
                },
            ),
            case("macvlan", "hops", Outcome::Skipped("not in b.json".into())),
        ]);
        assert!(xml.contains("<testsuites name=\"dockertrace diff\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\">"), "{xml}");
        assert!(xml.contains("<testsuite name=\"bridge\" tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains("<testcase classname=\"dockertrace.bridge\" name=\"hops\"/>"), "{xml}");
        assert!(xml.contains("<failure type=\"hop-latency\" message=\"bridge: request one-way time p50 4.5 µs → 9 µs (+100.0%)\">"), "{xml}");
        assert!(xml.contains("hop ladder request: the same 4 hops"), "{xml}");
        assert!(xml.contains("<skipped message=\"not in b.json\"/>"), "{xml}");
        assert_eq!(xml.matches("<testsuite ").count(), 2);
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape("a<b>&\"c'\x1b"), "a&lt;b&gt;&amp;&quot;c&apos;\\x1b");
        let xml = render(&[case("x\"><evil", "hops", Outcome::Passed)]);
        assert!(xml.contains("name=\"x&quot;&gt;&lt;evil\"") && !xml.contains("<evil"), "{xml}");
    }
}
