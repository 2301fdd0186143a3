//! The report's backends section: what the network hop costs. One workload, run in the same
//! report on every backend available: the in-process queue always, RabbitMQ and SQS when the
//! report is built with their features and their servers' variables are set:
//!
//! ```sh
//! source <(.ci/rabbitmq.sh start); source <(.ci/moto.sh start)
//! cargo run --release --example report --features rabbitmq,sqs
//! ```
//!
//! The workload speaks only `dyn Backend<Body = Vec<u8>>`: one producer thread sends 16-byte
//! messages one `send` at a time, keeping at most [`WINDOW`] sent and not yet deleted; one
//! consumer thread receives up to 10 at a time and deletes each batch with one `delete_batch`.
//! Messages per second count from the first send to the last delete; the latency of a message
//! is from just before its send to just after the delete call that settled it.

use crate::write::fmt_ns;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use visq::{Backend, BackendError, Outgoing, Queue};

type Bytes = dyn Backend<Body = Vec<u8>>;

/// Messages sent and not yet deleted, at most.
pub const WINDOW: usize = 100;

/// Messages per receive.
const RECEIVE_MAX: usize = 10;

/// A run that has not deleted every message by then is reported incomplete.
const LIMIT: Duration = Duration::from_secs(120);

/// One run's numbers.
pub struct Run {
    /// Messages per second, first send to last delete.
    pub rate: f64,
    /// Send-to-delete latency percentiles, ns.
    pub p50: f64,
    pub p99: f64,
    /// Whether every message was deleted within [`LIMIT`].
    pub complete: bool,
}

/// One backend's row: its runs, or why it was not measured.
pub struct Row {
    pub backend: &'static str,
    pub messages: usize,
    pub outcome: Result<Vec<Run>, String>,
}

/// Every backend's row.
pub struct Section {
    pub rows: Vec<Row>,
    pub quick: bool,
}

/// Runs the workload on every backend available: `reps` runs in process, one on each broker
/// (a broker run takes seconds to tens of seconds); fewer messages when `quick`. Each backend
/// gets a short warm-up run first.
pub fn measure(quick: bool, reps: usize) -> Section {
    let (local, remote) = if quick {
        (20_000, 200)
    } else {
        (200_000, 2_000)
    };
    let in_process: Queue<Vec<u8>> = Queue::builder()
        .capacity(WINDOW * 2)
        .build()
        .expect("a small queue builds");
    let in_process = Opened {
        backend: Arc::new(in_process),
        cleanup: Box::new(|| Ok(())),
    };
    let rows = vec![
        Row {
            backend: "in-process (visq `Queue` through the trait)",
            messages: local,
            outcome: Ok(in_process.measure(local, reps.max(1))),
        },
        Row {
            backend: "RabbitMQ (local server)",
            messages: remote,
            outcome: rabbitmq().map(|opened| opened.measure(remote, 1)),
        },
        Row {
            backend: "SQS (moto, local server)",
            messages: remote,
            outcome: sqs().map(|opened| opened.measure(remote, 1)),
        },
    ];
    Section { rows, quick }
}

/// A backend and what deletes its queues.
struct Opened {
    backend: Arc<Bytes>,
    cleanup: Box<dyn FnOnce() -> Result<(), BackendError>>,
}

impl Opened {
    /// A warm-up run, `reps` measured runs, then the queues are deleted.
    fn measure(self, messages: usize, reps: usize) -> Vec<Run> {
        run(&self.backend, (messages / 10).max(WINDOW));
        let runs = (0..reps).map(|_| run(&self.backend, messages)).collect();
        if let Err(error) = (self.cleanup)() {
            eprintln!("backends: deleting the report's queues: {error}");
        }
        runs
    }
}

/// The broker's address from `var`, or why it is not measured.
fn address(var: &str, script: &str, feature: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| {
        format!(
            "not measured: {var} is not set (`source <({script} start)`, and build the report \
             with `--features {feature}`)"
        )
    })
}

/// The report's queue on a broker (deleted after the run).
fn queue_name() -> String {
    format!("visq-report-{}", std::process::id())
}

fn rabbitmq() -> Result<Opened, String> {
    let url = address("VISQ_RABBITMQ_URL", ".ci/rabbitmq.sh", "rabbitmq")?;
    open_rabbitmq(&url, &queue_name())
}

#[cfg(feature = "rabbitmq")]
fn open_rabbitmq(url: &str, name: &str) -> Result<Opened, String> {
    let rabbit = Arc::new(
        visq::RabbitMq::builder(url, name)
            .build()
            .map_err(|error| format!("not measured: {error}"))?,
    );
    let queues = Arc::clone(&rabbit);
    Ok(Opened {
        backend: rabbit,
        cleanup: Box::new(move || queues.delete_queues()),
    })
}

#[cfg(not(feature = "rabbitmq"))]
fn open_rabbitmq(_url: &str, _name: &str) -> Result<Opened, String> {
    Err("not measured: the report was built without `--features rabbitmq`".into())
}

fn sqs() -> Result<Opened, String> {
    let endpoint = address("VISQ_SQS_ENDPOINT", ".ci/moto.sh", "sqs")?;
    open_sqs(&endpoint, &queue_name())
}

#[cfg(feature = "sqs")]
fn open_sqs(endpoint: &str, name: &str) -> Result<Opened, String> {
    let sqs = Arc::new(
        visq::Sqs::builder(name)
            .endpoint_url(endpoint)
            .build()
            .map_err(|error| format!("not measured: {error}"))?,
    );
    let queues = Arc::clone(&sqs);
    Ok(Opened {
        backend: sqs,
        cleanup: Box::new(move || queues.delete_queues()),
    })
}

#[cfg(not(feature = "sqs"))]
fn open_sqs(_endpoint: &str, _name: &str) -> Result<Opened, String> {
    Err("not measured: the report was built without `--features sqs`".into())
}

/// One run of the workload: `messages` through `backend`, at most [`WINDOW`] outstanding.
pub fn run(backend: &Arc<Bytes>, messages: usize) -> Run {
    let epoch = Instant::now();
    let deleted = AtomicUsize::new(0);
    let give_up = epoch + LIMIT;
    let (latencies, last) = thread::scope(|scope| {
        scope.spawn(|| produce(&**backend, messages, epoch, give_up, &deleted));
        consume(&**backend, messages, epoch, give_up, &deleted)
    });
    let complete = latencies.len() >= messages;
    let mut sorted = latencies;
    sorted.sort_unstable();
    let percentile = |p: f64| {
        if sorted.is_empty() {
            f64::NAN
        } else {
            let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[at] as f64
        }
    };
    Run {
        rate: sorted.len() as f64 / last.as_secs_f64(),
        p50: percentile(0.50),
        p99: percentile(0.99),
        complete,
    }
}

/// Sends `messages`, each body holding its send time (ns since `epoch`), waiting while
/// [`WINDOW`] are outstanding; retries a send refused as transient.
fn produce(
    backend: &Bytes,
    messages: usize,
    epoch: Instant,
    give_up: Instant,
    deleted: &AtomicUsize,
) {
    for n in 0..messages {
        while n >= deleted.load(Ordering::Acquire) + WINDOW {
            if Instant::now() > give_up {
                return;
            }
            thread::yield_now();
        }
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
        body.extend_from_slice(&(n as u64).to_le_bytes());
        let mut message = Outgoing::new(body);
        loop {
            match backend.send(message) {
                Ok(_) => break,
                Err(refused) if refused.error.is_transient() && Instant::now() < give_up => {
                    message = Outgoing::new(refused.body);
                    thread::sleep(Duration::from_millis(1));
                }
                Err(refused) => {
                    eprintln!("backends: send refused: {refused}");
                    return;
                }
            }
        }
    }
}

/// Receives and deletes until `messages` are deleted (or `give_up`); the send-to-delete
/// latency of each, ns, and when the last delete returned (since `epoch`).
fn consume(
    backend: &Bytes,
    messages: usize,
    epoch: Instant,
    give_up: Instant,
    deleted: &AtomicUsize,
) -> (Vec<u64>, Duration) {
    let mut latencies = Vec::with_capacity(messages);
    let mut deliveries = Vec::with_capacity(RECEIVE_MAX);
    let mut handles = Vec::with_capacity(RECEIVE_MAX);
    let mut last = epoch.elapsed();
    while latencies.len() < messages && Instant::now() < give_up {
        deliveries.clear();
        if let Err(error) = backend.receive(
            &mut deliveries,
            RECEIVE_MAX,
            Duration::from_millis(100),
            None,
        ) {
            eprintln!("backends: receive: {error}");
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        handles.clear();
        handles.extend(deliveries.iter().map(|d| d.handle.clone()));
        let results = backend.delete_batch(&handles);
        last = epoch.elapsed();
        let now = last.as_nanos() as u64;
        for (delivery, result) in deliveries.iter().zip(results) {
            if result.is_ok() {
                let sent = u64::from_le_bytes(delivery.body[..8].try_into().expect("16 bytes"));
                latencies.push(now.saturating_sub(sent));
                deleted.fetch_add(1, Ordering::Release);
            }
        }
    }
    (latencies, last)
}

fn fmt_rate(rate: f64) -> String {
    if !rate.is_finite() {
        "–".into()
    } else if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else if rate >= 10_000.0 {
        format!("{:.0} k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// Median and min–max of `values`, formatted by `fmt`.
fn fmt_runs(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => "–".into(),
        1 => fmt(sorted[0]),
        n => format!(
            "{} ({}–{})",
            fmt(sorted[n / 2]),
            fmt(sorted[0]),
            fmt(sorted[n - 1])
        ),
    }
}

impl Section {
    /// The section as markdown.
    pub fn markdown(&self) -> String {
        let mut w = String::new();
        let _ = writeln!(w, "## Backends: what the network hop costs (issue 13)\n");
        let _ = writeln!(
            w,
            "The same workload on each backend, in this run, through the `Backend` trait \
             (`dyn Backend<Body = Vec<u8>>`): one producer thread sends 16-byte messages one \
             `send` at a time, with at most {WINDOW} sent and not yet deleted; one consumer \
             thread receives up to {RECEIVE_MAX} per call and deletes each batch with one \
             `delete_batch`. Messages/s from the first send to the last delete; latency from \
             just before a message's send to just after the delete that settled it. The \
             brokers run on this machine over loopback (RabbitMQ with publisher confirms and \
             persistent messages; SQS is the moto server, a Python stand-in for AWS, so its \
             numbers say little about AWS itself). The in-process queue is measured {} times \
             (median, min–max), each broker once, each after a short warm-up run; wall-clock numbers \
             on a shared 2-core machine are noisy.{}\n",
            self.rows
                .first()
                .and_then(|row| row.outcome.as_ref().ok())
                .map_or(0, Vec::len),
            if self.quick {
                " A --quick run: fewer messages, too short to quote."
            } else {
                ""
            }
        );
        let _ = writeln!(
            w,
            "| backend | messages | messages/s | p50 send→delete | p99 send→delete |\n\
             |---|---|---|---|---|"
        );
        for row in &self.rows {
            match &row.outcome {
                Ok(runs) => {
                    let of = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<_>>();
                    let incomplete = runs.iter().filter(|run| !run.complete).count();
                    let _ = writeln!(
                        w,
                        "| {} | {}{} | {} | {} | {} |",
                        row.backend,
                        row.messages,
                        if incomplete > 0 {
                            format!(" ({incomplete} runs incomplete within {LIMIT:?})")
                        } else {
                            String::new()
                        },
                        fmt_runs(&of(|r| r.rate), fmt_rate),
                        fmt_runs(&of(|r| r.p50), fmt_ns),
                        fmt_runs(&of(|r| r.p99), fmt_ns),
                    );
                }
                Err(why) => {
                    let _ = writeln!(w, "| {} | – | {why} | | |", row.backend);
                }
            }
        }
        let _ = writeln!(
            w,
            "\nTo measure the brokers too: `source <(.ci/rabbitmq.sh start); source \
             <(.ci/moto.sh start)`, then `cargo run --release --example report --features \
             rabbitmq,sqs`.\n"
        );
        w
    }

    /// Puts the section into the report at `readme`, before its "How to reproduce" section
    /// (at the end if it has none).
    pub fn add_to(&self, readme: &Path) -> std::io::Result<()> {
        let mut text = std::fs::read_to_string(readme)?;
        let section = self.markdown();
        match text.find("\n## How to reproduce") {
            Some(at) => text.insert_str(at + 1, &section),
            None => text.push_str(&section),
        }
        std::fs::write(readme, text)
    }
}
