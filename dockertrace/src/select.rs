//! Perf-style event selection (`net:*`, `skb:kfree_skb`).
