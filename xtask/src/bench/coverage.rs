//! Coverage of adaptive stacks: what the `--stacks adaptive` run of a mode finds of the
//! `--stacks every` run's (event, function) weight, in the same round.
//!
//! The weight of an (event, function) pair is the number of events of that kind whose stack
//! holds the function (once per stack, however often it recurs). Recordings already share the
//! counts of unwalked events out over the walked stacks, so the adaptive run's weights are
//! estimates on the same scale; coverage only asks whether a pair is there at all. Devices are
//! left out: each run creates its own (other names, other ifindexes).
use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;

/// A function the adaptive run misses from this weight per message on is named.
pub const MISS_PER_MESSAGE: f64 = 0.01;

/// The (event, function) weights of one recorded run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    pub pairs: BTreeMap<(String, String), u64>,
    /// The workload's messages in that run.
    pub messages: u64,
}

impl Weights {
    /// From a recording's run (`runs[i]` of `--record`): its stack table and counts.
    pub fn of_run(run: &Value) -> Weights {
        let stacks: Vec<Vec<&str>> = run
            .get("stacks")
            .and_then(Value::as_array)
            .map(|s| {
                s.iter()
                    .map(|frames| {
                        frames
                            .as_array()
                            .map(|f| f.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut pairs = BTreeMap::new();
        for c in run.get("counts").and_then(Value::as_array).into_iter().flatten() {
            let (Some(event), Some(stack), Some(count)) = (
                c.get("event").and_then(Value::as_str),
                c.get("stack").and_then(Value::as_u64).and_then(|i| stacks.get(i as usize)),
                c.get("count").and_then(Value::as_u64),
            ) else {
                continue;
            };
            let mut seen = HashSet::new();
            for f in stack.iter().filter(|f| seen.insert(**f)) {
                *pairs.entry((event.to_owned(), (*f).to_owned())).or_default() += count;
            }
        }
        let messages = run.pointer("/workload/messages").and_then(Value::as_u64).unwrap_or(0);
        Weights { pairs, messages }
    }

    fn total(&self) -> u64 {
        self.pairs.values().sum()
    }
}

/// A pair of the every-stack run that the adaptive run does not have.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Missed {
    pub event: String,
    pub function: String,
    /// Its weight in the every-stack run, per workload message.
    pub per_message: f64,
}

/// One mode, one round: the adaptive run against the every-stack run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Coverage {
    pub mode: String,
    pub round: u32,
    /// The share of the every-stack run's (event, function) weight whose pair the adaptive run
    /// also has (1.0 when the every-stack run has no weight at all).
    pub weight_found: f64,
    pub pairs_every: usize,
    pub pairs_found: usize,
    /// Missed pairs at ≥ [`MISS_PER_MESSAGE`] per message, heaviest first.
    pub missed: Vec<Missed>,
    /// Missed pairs below that, counted only.
    pub missed_lighter: usize,
}

impl Coverage {
    pub fn compare(mode: &str, round: u32, every: &Weights, adaptive: &Weights) -> Coverage {
        let total = every.total();
        let msgs = every.messages.max(1) as f64;
        let mut found_weight = 0;
        let mut found = 0;
        let mut missed = Vec::new();
        let mut missed_lighter = 0;
        for ((event, function), &w) in &every.pairs {
            if adaptive.pairs.get(&(event.clone(), function.clone())).is_some_and(|a| *a > 0) {
                found += 1;
                found_weight += w;
            } else if w as f64 / msgs >= MISS_PER_MESSAGE {
                missed.push(Missed {
                    event: event.clone(),
                    function: function.clone(),
                    per_message: w as f64 / msgs,
                });
            } else {
                missed_lighter += 1;
            }
        }
        missed.sort_by(|a, b| b.per_message.total_cmp(&a.per_message));
        Coverage {
            mode: mode.to_owned(),
            round,
            weight_found: if total == 0 { 1.0 } else { found_weight as f64 / total as f64 },
            pairs_every: every.pairs.len(),
            pairs_found: found,
            missed,
            missed_lighter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stacks: &[&[&str]], counts: &[(&str, Option<u64>, u64)], messages: u64) -> Value {
        serde_json::json!({
            "stacks": stacks,
            "counts": counts.iter().map(|(e, s, c)| serde_json::json!({
                "event": e, "dev": "eth0", "netns": 1, "ifindex": 2, "stack": s, "count": c
            })).collect::<Vec<_>>(),
            "workload": { "messages": messages },
        })
    }

    #[test]
    fn weights_count_each_function_once_per_stack() {
        let w = Weights::of_run(&run(
            &[&["netif_rx", "f", "f", "g"], &["g"]],
            &[("net:a", Some(0), 10), ("net:a", Some(1), 5), ("net:b", None, 99)],
            100,
        ));
        assert_eq!(w.messages, 100);
        let get = |e: &str, f: &str| w.pairs.get(&(e.to_owned(), f.to_owned())).copied();
        assert_eq!(get("net:a", "f"), Some(10));
        assert_eq!(get("net:a", "g"), Some(15));
        assert_eq!(get("net:b", "f"), None, "counts without a stack carry no function");
    }

    #[test]
    fn coverage_is_the_found_share_and_names_heavy_misses() {
        let every = Weights::of_run(&run(
            &[&["a", "b"], &["rare"], &["arp"]],
            &[("net:x", Some(0), 980), ("net:x", Some(1), 5), ("net:y", Some(2), 15)],
            1000,
        ));
        let adaptive = Weights::of_run(&run(&[&["b", "a"]], &[("net:x", Some(0), 1000)], 1000));
        let c = Coverage::compare("bridge", 2, &every, &adaptive);
        // Found: (x,a) 980 + (x,b) 980 of 980*2 + 5 + 15.
        assert!((c.weight_found - 1960.0 / 1980.0).abs() < 1e-9, "{}", c.weight_found);
        assert_eq!((c.pairs_every, c.pairs_found), (4, 2));
        assert_eq!(c.missed.len(), 1, "{:?}", c.missed);
        assert_eq!((c.missed[0].event.as_str(), c.missed[0].function.as_str()), ("net:y", "arp"));
        assert!((c.missed[0].per_message - 0.015).abs() < 1e-9);
        assert_eq!(c.missed_lighter, 1, "rare: 0.005 per message");
        let all = Coverage::compare("bridge", 1, &every, &every);
        assert_eq!((all.weight_found, all.missed.len(), all.missed_lighter), (1.0, 0, 0));
        let nothing = Coverage::compare("normal", 1, &Weights::default(), &adaptive);
        assert_eq!(nothing.weight_found, 1.0);
    }
}
