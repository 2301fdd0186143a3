//! The report's section for issue 11: FIFO message groups (1, 16, 10,000 groups), priorities
//! (4 levels) and at-most-once receive, each on visq with the feature, on visq's plain queue
//! and on the lock-based reference extended to the feature, in the same run, at capacities
//! 1024 and 2^20. Workloads: `benches/common/features.rs`.

use crate::common::features::{
    self, lanes, Cell, Contender, Feature, Threads, CAPACITIES, GROUP_COUNTS, LEVELS,
};
use crate::write::{fmt_ns, fmt_rate, fmt_ratio_stats, ratios, stats};
use crate::Plan;
use std::fmt::Write;
use std::time::Duration;

/// The longest one run may take (a run past it counts as not finished).
const LIMIT: Duration = Duration::from_secs(10);

/// One cell's runs, per contender and repeat: M msgs/s (threaded) or ns per message
/// (uncontended); NaN where a run did not finish.
pub struct FeatureCell {
    pub cell: Cell,
    pub runs: Vec<(Contender, Vec<f64>)>,
}

impl FeatureCell {
    fn runs_of(&self, contender: Contender) -> &[f64] {
        self.runs
            .iter()
            .find(|(c, _)| *c == contender)
            .map_or(&[][..], |(_, v)| v.as_slice())
    }

    /// `contender`'s speed over `baseline`'s, repeat by repeat (median, min, max).
    fn speedup(&self, contender: Contender, baseline: Contender) -> Option<(f64, f64, f64)> {
        let (a, b) = (self.runs_of(contender), self.runs_of(baseline));
        match self.cell.threads {
            Threads::Uncontended => ratios(a, b, |a, b| b / a),
            Threads::Shape(_) => ratios(a, b, |a, b| a / b),
        }
    }
}

/// Runs every cell of [`features::cells`]: one warm-up run per queue (a quarter of the
/// messages; none in a quick run, where building the 2^20-slot queues is most of the time),
/// then `plan.reps` repeats, each running the three queues back to back.
pub fn measure(plan: &Plan) -> Vec<FeatureCell> {
    let messages = (plan.messages / 10).max(2_000);
    let ops = (plan.uncontended_ops / 4).max(10_000);
    let run = |cell: &Cell, contender: Contender, scale: u64| -> f64 {
        match cell.threads {
            Threads::Uncontended => {
                let ops = ops / scale;
                let took = features::uncontended(cell, contender, ops);
                took.as_nanos() as f64 / ops as f64
            }
            Threads::Shape(_) => {
                let messages = messages / scale;
                features::throughput(cell, contender, messages, LIMIT)
                    .map_or(f64::NAN, |d| messages as f64 / d.as_secs_f64() / 1e6)
            }
        }
    };
    features::cells()
        .into_iter()
        .map(|cell| {
            if !plan.quick {
                for contender in Contender::ALL {
                    run(&cell, contender, 4);
                }
            }
            let mut runs: Vec<(Contender, Vec<f64>)> =
                Contender::ALL.iter().map(|&c| (c, Vec::new())).collect();
            for _ in 0..plan.reps {
                for (contender, values) in runs.iter_mut() {
                    values.push(run(&cell, *contender, 1));
                }
            }
            FeatureCell { cell, runs }
        })
        .collect()
}

/// Writes the section.
pub fn section(w: &mut String, cells: &[FeatureCell]) {
    let _ = writeln!(
        w,
        "\n## Message groups, priorities, at-most-once (issue 11)\n"
    );
    let lanes_used: Vec<String> = GROUP_COUNTS
        .iter()
        .map(|&g| {
            let per_capacity: Vec<String> = CAPACITIES
                .iter()
                .map(|&c| format!("{} at {c}", lanes(g, c)))
                .collect();
            format!(
                "{}: {}",
                Feature::Groups(g).label(),
                per_capacity.join(", ")
            )
        })
        .collect();
    let _ = writeln!(
        w,
        "Each cell runs three queues back to back in every repeat: visq with the feature, visq's \
         plain queue (no groups, no priorities: the same sends without them; for at-most-once, \
         send, receive and delete), and the lock-based reference extended to the feature the \
         straightforward way (its `Mutex`, `Condvar`, slab and deadline heap, with a `HashMap` \
         of per-group `VecDeque`s, a FIFO of groups with ready work and a set of groups with a \
         lease out for groups, and a `BinaryHeap` by (priority, sequence) for priorities; its \
         own `take` for at-most-once). Every queue is built with the cell's capacity. Groups: \
         message `n` goes to group `n % groups`; visq is built with 4x the groups that can hold \
         messages at once in lanes (rounded up to a power of two: {}). Priorities: {LEVELS} \
         levels, each message's drawn at random (a fixed table, the same for every queue). \
         Threaded runs: receive batch 1; a run ends when the consumers have settled every \
         message. Throughput in M msgs/s, uncontended cost in ns per message; median (min–max) \
         of the repeats. The ratios are speed ratios taken repeat by repeat between the runs \
         made back to back (above 1: visq is faster). Wall-clock numbers on a shared machine \
         are noisy.\n",
        lanes_used.join("; "),
    );
    let features = GROUP_COUNTS
        .iter()
        .map(|&n| Feature::Groups(n))
        .chain([Feature::Priorities, Feature::AtMostOnce]);
    for feature in features {
        let rows: Vec<&FeatureCell> = cells.iter().filter(|c| c.cell.feature == feature).collect();
        if rows.is_empty() {
            continue;
        }
        let name = |c: Contender| c.name(feature);
        let _ = writeln!(w, "\n### {}\n", feature.label());
        let _ = writeln!(
            w,
            "| threads | capacity | {} | {} | {} | {} ÷ {} | {} ÷ {} |\n|---|---|---|---|---|---|---|",
            name(Contender::Visq),
            name(Contender::VisqPlain),
            name(Contender::LockRef),
            name(Contender::Visq),
            name(Contender::VisqPlain),
            name(Contender::Visq),
            name(Contender::LockRef),
        );
        for row in rows {
            let value = |c: Contender| -> String {
                let values = row.runs_of(c);
                let failed = values.iter().filter(|v| !v.is_finite()).count();
                let fmt: fn(f64) -> String = match row.cell.threads {
                    Threads::Uncontended => fmt_ns,
                    Threads::Shape(_) => fmt_rate,
                };
                let note = if failed > 0 {
                    format!(" ({failed} runs did not finish)")
                } else {
                    String::new()
                };
                stats(values).map_or("did not finish".into(), |(m, lo, hi)| {
                    format!("{} ({}–{}){note}", fmt(m), fmt(lo), fmt(hi))
                })
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.cell.threads.label(),
                row.cell.capacity,
                value(Contender::Visq),
                value(Contender::VisqPlain),
                value(Contender::LockRef),
                fmt_ratio_stats(row.speedup(Contender::Visq, Contender::VisqPlain)),
                fmt_ratio_stats(row.speedup(Contender::Visq, Contender::LockRef)),
            );
        }
    }
    // The target for at-most-once.
    let uncontended = cells.iter().find(|c| {
        c.cell.feature == Feature::AtMostOnce
            && c.cell.threads == Threads::Uncontended
            && c.cell.capacity == CAPACITIES[0]
    });
    let speedup = uncontended.and_then(|c| c.speedup(Contender::Visq, Contender::VisqPlain));
    let _ = writeln!(w, "\n| target (issue 11) | measured | |\n|---|---|---|");
    let _ = writeln!(
        w,
        "| at-most-once `take` costs less than a receive plus a delete (uncontended, capacity {}) \
         | receive+delete ÷ take = {} per repeat | {} |",
        CAPACITIES[0],
        fmt_ratio_stats(speedup),
        match speedup {
            Some((median, _, _)) if median > 1.0 => "met",
            Some(_) => "**missed**",
            None => "not measured",
        }
    );
}

/// Measures the section alone and returns it as markdown (`--features-only`).
pub fn report(plan: &Plan) -> String {
    let mut w = String::new();
    section(&mut w, &measure(plan));
    w
}
