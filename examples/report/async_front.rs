//! The report's async section (issue 12): visq's async front against tokio::sync::mpsc,
//! async-channel and flume, and against visq's sync receive, in the same run. Workloads:
//! `benches/common/async_front.rs`.

use crate::common::async_front::{latency, throughput, AsyncContender, ASYNC_CONTENDERS};
use crate::common::median_min_max;
use crate::write::fmt_ns;
use crate::Plan;
use std::fmt::Write;

/// The offered rate of the latency cells (issue 12's target is stated at it).
const RATE: u64 = 100_000;

/// One contender's cells: throughput per shape (M msgs/s, one value per repeat) and the
/// latency runs' (p50, p99, p99.9) in ns.
pub struct AsyncRow {
    pub contender: AsyncContender,
    pub one_to_one: Vec<f64>,
    pub four_to_four: Vec<f64>,
    pub latency: Vec<[f64; 3]>,
}

/// Runs the section: repeats interleaved across contenders, so that each repeat compares
/// runs made back to back.
pub fn measure(plan: &Plan) -> Vec<AsyncRow> {
    let mut rows: Vec<AsyncRow> = ASYNC_CONTENDERS
        .iter()
        .map(|&contender| AsyncRow {
            contender,
            one_to_one: Vec::new(),
            four_to_four: Vec::new(),
            latency: Vec::new(),
        })
        .collect();
    let messages = plan.messages / 2;
    let latency_messages = ((RATE as f64) * plan.latency_scale).max(2_000.0) as u64;
    for _ in 0..plan.reps {
        for row in rows.iter_mut() {
            let rate = |p, c| throughput(row.contender, p, c, messages).map(|r| r / 1e6);
            row.one_to_one.extend(rate(1, 1));
            row.four_to_four.extend(rate(4, 4));
        }
    }
    for _ in 0..plan.latency_reps {
        for row in rows.iter_mut() {
            row.latency
                .extend(latency(row.contender, RATE, latency_messages));
        }
    }
    rows
}

/// Writes the section.
pub fn section(w: &mut String, rows: &[AsyncRow]) {
    let _ = writeln!(w, "\n## Async front (issue 12)\n");
    let _ = writeln!(
        w,
        "A multi-threaded tokio runtime (2 worker threads), capacity 1024. *visq async*: tasks \
         doing the whole lifecycle (`send_async`, `receive_async`, `delete`); *visq sync*: \
         threads (`send_timeout`, `receive`, `delete`); the three async channels do a plain \
         handoff (send, receive: no lease, no delete). tokio's mpsc has one receiver: its 4P4C \
         consumers share it behind a `tokio::sync::Mutex`. Latency: one producer thread paced \
         to {} k msgs/s (it spins to each send time), one consumer (a task; a thread for visq \
         sync), send-to-receive. Median (min–max) of the repeats; wall-clock numbers on a \
         shared machine are noisy.\n",
        RATE / 1000
    );
    let _ = writeln!(
        w,
        "| queue | 1P1C M msgs/s | 4P4C M msgs/s | p50 | p99 | p99.9 |\n|---|---|---|---|---|---|"
    );
    let cell = |values: &[f64], scale: f64| -> String {
        if values.is_empty() {
            return "did not finish".into();
        }
        let (median, min, max) = median_min_max(values);
        format!(
            "{:.2} ({:.2}–{:.2})",
            median * scale,
            min * scale,
            max * scale
        )
    };
    let quantile = |row: &AsyncRow, i: usize| -> String {
        let values: Vec<f64> = row.latency.iter().map(|l| l[i]).collect();
        if values.is_empty() {
            return "-".into();
        }
        fmt_ns(median_min_max(&values).0)
    };
    for row in rows {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            row.contender.name(),
            cell(&row.one_to_one, 1.0),
            cell(&row.four_to_four, 1.0),
            quantile(row, 0),
            quantile(row, 1),
            quantile(row, 2),
        );
    }
    // The targets.
    let median_of = |c: AsyncContender, pick: fn(&AsyncRow) -> Vec<f64>| {
        rows.iter()
            .find(|r| r.contender == c)
            .map(pick)
            .filter(|v| !v.is_empty())
            .map(|v| median_min_max(&v).0)
    };
    let _ = writeln!(w, "\n| target (issue 12) | measured | |\n|---|---|---|");
    for (shape, pick) in [
        (
            "1P1C",
            (|r: &AsyncRow| r.one_to_one.clone()) as fn(&AsyncRow) -> Vec<f64>,
        ),
        ("4P4C", |r: &AsyncRow| r.four_to_four.clone()),
    ] {
        // Repeat by repeat: the sync and async runs of one repeat were made back to back.
        let series = |c: AsyncContender| rows.iter().find(|r| r.contender == c).map(pick);
        let ratios: Vec<f64> = match (
            series(AsyncContender::VisqSync),
            series(AsyncContender::VisqAsync),
        ) {
            (Some(sync), Some(asynchronous)) if sync.len() == asynchronous.len() => sync
                .iter()
                .zip(&asynchronous)
                .map(|(sync, asynchronous)| sync / asynchronous)
                .collect(),
            _ => Vec::new(),
        };
        let ratio = (!ratios.is_empty()).then(|| median_min_max(&ratios));
        let _ = writeln!(
            w,
            "| async lifecycle within 1.5x of the sync one, {shape} | {} | {} |",
            ratio.map_or("-".into(), |(median, min, max)| format!(
                "sync ÷ async = {median:.2} ({min:.2}–{max:.2}) per repeat"
            )),
            ratio.map_or("not measured", |(median, _, _)| if median <= 1.5 {
                "met"
            } else {
                "**missed**"
            })
        );
    }
    let p50 = |r: &AsyncRow| r.latency.iter().map(|l| l[0]).collect();
    let (visq, tokio) = (
        median_of(AsyncContender::VisqAsync, p50),
        median_of(AsyncContender::TokioMpsc, p50),
    );
    let _ = writeln!(
        w,
        "| send-to-receive p50 no worse than tokio mpsc at 100 k msgs/s | visq async {} vs {} | {} |",
        visq.map_or("-".into(), fmt_ns),
        tokio.map_or("-".into(), fmt_ns),
        match visq.zip(tokio) {
            Some((v, t)) if v <= t => "met",
            Some(_) => "**missed**",
            None => "not measured",
        }
    );
}
