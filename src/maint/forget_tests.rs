//! Grandfather-father-son selection against tables worked out by hand (calendar facts used:
//! 2024 is a leap year; 2024-12-29 is a Sunday in ISO week 2024-W52 and 2024-12-30 the Monday
//! of 2025-W01; 2020 has an ISO week 53 running from Monday 2020-12-28 to Sunday 2021-01-03).

use super::*;
use crate::timespec::parse_time;

/// (label, time, complete, tags)
type Snap = (&'static str, &'static str, bool, &'static [&'static str]);

struct Case {
    name: &'static str,
    snaps: &'static [Snap],
    policy: Policy,
    /// Kept labels with their reasons in order; every other snapshot must be removed.
    keep: &'static [(&'static str, &'static [&'static str])],
}

fn p() -> Policy {
    Policy::default()
}

fn ok(label: &'static str, time: &'static str) -> Snap {
    (label, time, true, &[])
}

fn cases() -> Vec<Case> {
    const DAY_EDGE: &[Snap] = &[
        ("a", "2026-11-29T23:59:59Z", true, &[]),
        ("b", "2026-11-30T00:00:00Z", true, &[]),
        ("c", "2026-11-30T12:00:00Z", true, &[]),
    ];
    const HOUR_EDGE: &[Snap] = &[
        ("a", "2026-11-30T13:59:59.999Z", true, &[]),
        ("b", "2026-11-30T14:00:00Z", true, &[]),
        ("c", "2026-11-30T14:30:00Z", true, &[]),
    ];
    const LEAP: &[Snap] = &[
        ("a", "2024-02-28T10:00:00Z", true, &[]),
        ("c", "2024-02-29T00:00:00Z", true, &[]),
        ("b", "2024-02-29T23:59:59Z", true, &[]),
        ("d", "2024-03-01T00:00:00Z", true, &[]),
    ];
    const YEAR_END_2024: &[Snap] = &[
        ("sun", "2024-12-29T12:00:00Z", true, &[]),
        ("mon", "2024-12-30T00:00:00Z", true, &[]),
        ("sun2", "2025-01-05T23:59:59Z", true, &[]),
        ("mon2", "2025-01-06T00:00:00Z", true, &[]),
    ];
    const WEEK53: &[Snap] = &[
        ("w53mon", "2020-12-28T00:00:00Z", true, &[]),
        ("w53sun", "2021-01-03T23:59:59Z", true, &[]),
        ("w01mon", "2021-01-04T00:00:00Z", true, &[]),
    ];
    const MONTH_EDGE: &[Snap] = &[
        ("jan", "2026-01-31T23:59:59.999Z", true, &[]),
        ("feb", "2026-02-01T00:00:00Z", true, &[]),
        ("dec", "2025-12-31T23:59:59Z", true, &[]),
    ];
    const SEVERAL: &[Snap] = &[
        ("d1a", "2026-11-01T08:00:00Z", true, &[]),
        ("d1b", "2026-11-01T12:00:00Z", true, &[]),
        ("d1c", "2026-11-01T18:00:00Z", true, &[]),
        ("d2a", "2026-11-02T08:00:00Z", true, &[]),
        ("d2b", "2026-11-02T12:00:00Z", true, &[]),
    ];
    const INCOMPLETE: &[Snap] = &[
        ("d1a", "2026-11-01T09:00:00Z", true, &[]),
        ("d1b", "2026-11-01T10:00:00Z", true, &[]),
        ("d2", "2026-11-02T10:00:00Z", true, &[]),
        ("d3bad", "2026-11-03T10:00:00Z", false, &[]),
    ];
    const TAGS: &[Snap] = &[
        ("old", "2026-01-01T00:00:00Z", true, &["release"]),
        ("oldbad", "2026-01-02T00:00:00Z", false, &["release", "x"]),
        ("mid", "2026-06-01T00:00:00Z", true, &["x"]),
        ("new", "2026-11-01T00:00:00Z", true, &[]),
    ];
    const WITHIN: &[Snap] = &[
        ("edge", "2026-11-23T12:00:00Z", true, &[]),
        ("outside", "2026-11-23T11:59:59.999Z", true, &[]),
        ("mid", "2026-11-27T00:00:00Z", true, &[]),
        ("newest", "2026-11-30T12:00:00Z", true, &[]),
    ];
    const README: &[Snap] = &[
        ("a", "2026-10-31T23:00:00Z", true, &[]),
        ("b", "2026-11-15T03:00:00Z", true, &[]),
        ("c", "2026-11-28T03:00:00Z", true, &[]),
        ("d", "2026-11-30T03:00:00Z", true, &[]),
        ("e", "2026-11-30T15:00:00Z", false, &[]),
        ("f", "2026-12-01T03:00:00Z", true, &[]),
        ("g", "2026-12-01T15:00:00Z", true, &[]),
    ];
    const ALL_BAD: &[Snap] = &[
        ("x", "2026-11-01T10:00:00Z", false, &[]),
        ("y", "2026-11-02T10:00:00Z", false, &[]),
    ];
    vec![
        Case {
            name: "a source whose snapshots no rule keeps keeps its newest",
            snaps: ALL_BAD,
            policy: Policy {
                last: 3,
                daily: 3,
                ..p()
            },
            keep: &[("y", &[NEWEST_FALLBACK])],
        },
        Case {
            name: "the worked example of README.md (Retention)",
            snaps: README,
            policy: Policy {
                last: 1,
                daily: 3,
                weekly: 3,
                monthly: 3,
                within_ms: Some(12 * 3_600_000),
                ..p()
            },
            keep: &[
                (
                    "g",
                    &[
                        "last 1",
                        "daily 2026-12-01",
                        "weekly 2026-W49",
                        "monthly 2026-12",
                        "within 12h",
                    ],
                ),
                ("f", &["within 12h"]),
                ("d", &["daily 2026-11-30", "monthly 2026-11"]),
                ("c", &["daily 2026-11-28", "weekly 2026-W48"]),
                ("b", &["weekly 2026-W46"]),
                ("a", &["monthly 2026-10"]),
            ],
        },
        Case {
            name: "day edge 23:59:59 vs 00:00:00",
            snaps: DAY_EDGE,
            policy: Policy { daily: 2, ..p() },
            keep: &[("c", &["daily 2026-11-30"]), ("a", &["daily 2026-11-29"])],
        },
        Case {
            name: "counts only buckets that have a snapshot",
            snaps: DAY_EDGE,
            policy: Policy { daily: 5, ..p() },
            keep: &[("c", &["daily 2026-11-30"]), ("a", &["daily 2026-11-29"])],
        },
        Case {
            name: "hour edge",
            snaps: HOUR_EDGE,
            policy: Policy { hourly: 2, ..p() },
            keep: &[
                ("c", &["hourly 2026-11-30T14"]),
                ("a", &["hourly 2026-11-30T13"]),
            ],
        },
        Case {
            name: "leap day is its own day; months",
            snaps: LEAP,
            policy: Policy {
                daily: 3,
                monthly: 2,
                ..p()
            },
            keep: &[
                ("d", &["daily 2024-03-01", "monthly 2024-03"]),
                ("b", &["daily 2024-02-29", "monthly 2024-02"]),
                ("a", &["daily 2024-02-28"]),
            ],
        },
        Case {
            name: "ISO week across the 2024/2025 year end",
            snaps: YEAR_END_2024,
            policy: Policy { weekly: 3, ..p() },
            keep: &[
                ("mon2", &["weekly 2025-W02"]),
                ("sun2", &["weekly 2025-W01"]),
                ("sun", &["weekly 2024-W52"]),
            ],
        },
        Case {
            name: "ISO week 53 spans the year end; years are calendar years",
            snaps: WEEK53,
            policy: Policy {
                weekly: 2,
                yearly: 2,
                ..p()
            },
            keep: &[
                ("w01mon", &["weekly 2021-W01", "yearly 2021"]),
                ("w53sun", &["weekly 2020-W53"]),
                ("w53mon", &["yearly 2020"]),
            ],
        },
        Case {
            name: "month and year edges",
            snaps: MONTH_EDGE,
            policy: Policy {
                monthly: 3,
                yearly: 1,
                ..p()
            },
            keep: &[
                ("feb", &["monthly 2026-02", "yearly 2026"]),
                ("jan", &["monthly 2026-01"]),
                ("dec", &["monthly 2025-12"]),
            ],
        },
        Case {
            name: "several per bucket: the newest of each; keep-last combined with daily",
            snaps: SEVERAL,
            policy: Policy {
                last: 2,
                daily: 2,
                ..p()
            },
            keep: &[
                ("d2b", &["last 1", "daily 2026-11-02"]),
                ("d2a", &["last 2"]),
                ("d1c", &["daily 2026-11-01"]),
            ],
        },
        Case {
            name: "incomplete snapshots count for no bucket and no keep-last",
            snaps: INCOMPLETE,
            policy: Policy {
                last: 1,
                daily: 2,
                ..p()
            },
            keep: &[
                ("d2", &["last 1", "daily 2026-11-02"]),
                ("d1b", &["daily 2026-11-01"]),
            ],
        },
        Case {
            name: "keep-within keeps incomplete ones, counted from the newest of any kind",
            snaps: INCOMPLETE,
            policy: Policy {
                within_ms: Some(86_400_000),
                ..p()
            },
            keep: &[("d3bad", &["within 1day"]), ("d2", &["within 1day"])],
        },
        Case {
            name: "tags keep any snapshot, complete or not",
            snaps: TAGS,
            policy: Policy {
                last: 1,
                tags: vec!["release".into()],
                ..p()
            },
            keep: &[
                ("new", &["last 1"]),
                ("oldbad", &["tag release"]),
                ("old", &["tag release"]),
            ],
        },
        Case {
            name: "several tags are ORed",
            snaps: TAGS,
            policy: Policy {
                tags: vec!["release".into(), "x".into()],
                ..p()
            },
            keep: &[
                ("mid", &["tag x"]),
                ("oldbad", &["tag release", "tag x"]),
                ("old", &["tag release"]),
            ],
        },
        Case {
            name: "keep-within edge is inclusive",
            snaps: WITHIN,
            policy: Policy {
                within_ms: Some(7 * 86_400_000),
                ..p()
            },
            keep: &[
                ("newest", &["within 7days"]),
                ("mid", &["within 7days"]),
                ("edge", &["within 7days"]),
            ],
        },
        Case {
            name: "keep-within and daily together",
            snaps: WITHIN,
            policy: Policy {
                within_ms: Some(3_600_000),
                daily: 4,
                ..p()
            },
            keep: &[
                ("newest", &["daily 2026-11-30", "within 1h"]),
                ("mid", &["daily 2026-11-27"]),
                ("edge", &["daily 2026-11-23"]),
            ],
        },
    ]
}

fn candidates(snaps: &[Snap], source: &str, base: u8) -> Vec<Candidate> {
    snaps
        .iter()
        .enumerate()
        .map(|(i, (_, t, complete, tags))| Candidate {
            id: SnapshotId([base + i as u8; 32]),
            source: source.into(),
            time: parse_time(t, 0).unwrap_or_else(|| panic!("bad time {t}")),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            complete: *complete,
        })
        .collect()
}

#[test]
fn gfs_tables() {
    for c in cases() {
        let cands = candidates(c.snaps, "src", 1);
        let label = |id: &str| {
            let i = cands.iter().position(|x| x.id.to_hex() == id).unwrap();
            c.snaps[i].0
        };
        let got = select(&cands, &c.policy);
        assert_eq!(got.len(), c.snaps.len(), "{}", c.name);
        // Newest first.
        assert!(
            got.windows(2).all(|w| w[0].time_ms >= w[1].time_ms),
            "{}",
            c.name
        );
        let kept: Vec<(&str, Vec<&str>)> = got
            .iter()
            .filter(|d| d.action == Action::Keep)
            .map(|d| (label(&d.id), d.reasons.iter().map(String::as_str).collect()))
            .collect();
        let want: Vec<(&str, Vec<&str>)> = c.keep.iter().map(|(l, r)| (*l, r.to_vec())).collect();
        assert_eq!(kept, want, "case: {}", c.name);
        for d in got.iter().filter(|d| d.action == Action::Remove) {
            assert!(d.reasons.is_empty(), "{}: {d:?}", c.name);
        }
    }
}

#[test]
fn rules_apply_per_source() {
    let mut all = candidates(
        &[ok("a1", "2026-01-01T00:00"), ok("a2", "2026-01-02T00:00")],
        "a",
        1,
    );
    all.extend(candidates(&[ok("b1", "2025-01-01T00:00")], "b", 10));
    let got = select(&all, &Policy { last: 1, ..p() });
    let kept: Vec<(&str, &str)> = got
        .iter()
        .filter(|d| d.action == Action::Keep)
        .map(|d| (d.source.as_str(), d.time.as_str()))
        .collect();
    assert_eq!(
        kept,
        vec![("a", "2026-01-02T00:00:00Z"), ("b", "2025-01-01T00:00:00Z")]
    );
}

#[test]
fn a_policy_without_rules_keeps_nothing() {
    assert!(p().keeps_nothing());
    assert!(Policy {
        daily: 0,
        last: 0,
        ..p()
    }
    .keeps_nothing());
    assert!(!Policy {
        within_ms: Some(0),
        ..p()
    }
    .keeps_nothing());
    assert!(!Policy {
        tags: vec!["t".into()],
        ..p()
    }
    .keeps_nothing());
    assert!(!Policy { yearly: 1, ..p() }.keeps_nothing());
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn snaps() -> impl Strategy<Value = Vec<Candidate>> {
        // Up to 40 snapshots over ~3 years from 2023-06-01, a third of them in one busy week.
        prop::collection::vec(
            (0i64..1_000 * 86_400, any::<bool>(), any::<bool>(), 0u8..3),
            0..40,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (secs, busy, complete, tag))| Candidate {
                    id: SnapshotId([i as u8; 32]),
                    source: if i % 4 == 0 { "b".into() } else { "a".into() },
                    time: 1_685_577_600_000
                        + 1000 * (if busy { secs % (7 * 86_400) } else { secs }),
                    tags: if tag == 0 { vec!["t".into()] } else { vec![] },
                    complete: complete || i % 3 != 0,
                })
                .collect()
        })
    }

    fn policies() -> impl Strategy<Value = Policy> {
        (
            0u32..4,
            0u32..4,
            0u32..6,
            0u32..4,
            0u32..4,
            0u32..3,
            any::<bool>(),
        )
            .prop_map(
                |(last, hourly, daily, weekly, monthly, yearly, tag)| Policy {
                    last,
                    hourly,
                    daily,
                    weekly,
                    monthly,
                    yearly,
                    within_ms: None,
                    tags: if tag { vec!["t".into()] } else { vec![] },
                },
            )
    }

    proptest! {
        /// Kept exactly when there is a reason; each bucket rule keeps one snapshot in each of
        /// min(N, buckets with a complete snapshot) buckets; incomplete ones are kept only by
        /// tag; keep-last keeps the newest complete ones.
        #[test]
        fn selection_invariants(all in snaps(), policy in policies()) {
            let got = select(&all, &policy);
            prop_assert_eq!(got.len(), all.len());
            let by_id: std::collections::HashMap<String, &Candidate> =
                all.iter().map(|c| (c.id.to_hex(), c)).collect();
            for d in &got {
                prop_assert_eq!(d.action == Action::Keep, !d.reasons.is_empty());
                let c = by_id[&d.id];
                if !c.complete {
                    prop_assert!(
                        d.reasons.iter().all(|r| r.starts_with("tag ") || r == NEWEST_FALLBACK),
                        "{:?}", d
                    );
                }
            }
            for source in ["a", "b"] {
                let mine: Vec<&Decision> = got.iter().filter(|d| d.source == source).collect();
                // Never every snapshot of a source; the fallback only when nothing else kept.
                prop_assert!(mine.is_empty() || mine.iter().any(|d| d.action == Action::Keep));
                let fallback = mine.iter().filter(|d| d.reasons.iter().any(|r| r == NEWEST_FALLBACK));
                for d in fallback {
                    prop_assert_eq!(d.reasons.len(), 1);
                    prop_assert_eq!(&d.id, &mine[0].id);
                    prop_assert_eq!(mine.iter().filter(|d| d.action == Action::Keep).count(), 1);
                }
                let complete: Vec<&&Decision> =
                    mine.iter().filter(|d| by_id[&d.id].complete).collect();
                for (rule, n, b) in [
                    ("hourly", policy.hourly, Bucket::Hourly),
                    ("daily", policy.daily, Bucket::Daily),
                    ("weekly", policy.weekly, Bucket::Weekly),
                    ("monthly", policy.monthly, Bucket::Monthly),
                    ("yearly", policy.yearly, Bucket::Yearly),
                ] {
                    let buckets: BTreeSet<String> =
                        complete.iter().map(|d| b.key(d.time_ms)).collect();
                    let kept: Vec<&&&Decision> = complete
                        .iter()
                        .filter(|d| d.reasons.iter().any(|r| r.split(' ').next() == Some(rule)))
                        .collect();
                    prop_assert_eq!(kept.len(), buckets.len().min(n as usize));
                    // The newest complete snapshot of each of the newest buckets.
                    let newest_buckets: Vec<&String> = buckets.iter().rev().take(n as usize).collect();
                    for k in newest_buckets {
                        let newest = complete.iter().find(|d| &b.key(d.time_ms) == k).unwrap();
                        prop_assert!(
                            newest.reasons.contains(&format!("{rule} {k}")),
                            "{:?} lacks {} {}", newest, rule, k
                        );
                    }
                }
                let last: Vec<&String> = complete
                    .iter()
                    .take(policy.last as usize)
                    .map(|d| &d.id)
                    .collect();
                for d in &mine {
                    let has = d.reasons.iter().any(|r| r.starts_with("last "));
                    prop_assert_eq!(has, last.contains(&&d.id));
                }
            }
        }
    }
}
