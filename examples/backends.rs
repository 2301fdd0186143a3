//! One worker pool, three backends: the same jobs processed by the same code on the in-process
//! queue, on RabbitMQ or on Amazon SQS, chosen by one flag.
//!
//! ```sh
//! cargo run --example backends                                    # in process
//! source <(.ci/rabbitmq.sh start)                                 # sets VISQ_RABBITMQ_URL
//! cargo run --example backends --features rabbitmq -- --backend rabbitmq
//! source <(.ci/moto.sh start)                                     # sets VISQ_SQS_ENDPOINT
//! cargo run --example backends --features sqs -- --backend sqs --jobs 50
//! VISQ_BACKEND=sqs cargo run --example backends --features sqs    # or by the environment
//! ```
//!
//! Everything after [`open`] speaks only `dyn Backend<Body = Vec<u8>>`: the switch is the one
//! line that builds the backend. On a broker the example uses a queue of its own (named with
//! the process id) and deletes it at the end.
//!
//! The pool is [`visq::Consumer`] built over the backend (`Consumer::backend_builder`): the
//! worker pool the in-process queue uses, with its retries, dead-lettering and graceful stop.

use std::error::Error;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use visq::{Backend, Consumer, Outgoing, Queue};

type Bytes = dyn Backend<Body = Vec<u8>>;

/// The pool's bound: a run that has not processed every job by then fails.
const GIVE_UP: Duration = Duration::from_secs(120);

struct Options {
    backend: String,
    jobs: usize,
    workers: usize,
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut options = Options {
        backend: std::env::var("VISQ_BACKEND").unwrap_or_else(|_| "inprocess".to_string()),
        jobs: 100,
        workers: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--backend" => options.backend = value("--backend")?,
            "--jobs" => options.jobs = value("--jobs")?.parse()?,
            "--workers" => options.workers = value("--workers")?.parse()?,
            _ => {
                return Err(format!(
                    "unknown argument {arg:?}; usage: backends [--backend inprocess|rabbitmq|sqs] \
                     [--jobs N] [--workers N] (or VISQ_BACKEND=...)"
                )
                .into())
            }
        }
    }
    Ok(options)
}

/// A backend and what removes its queues when the example is done.
struct Opened {
    backend: Arc<Bytes>,
    cleanup: Box<dyn FnOnce() -> Result<(), Box<dyn Error>>>,
}

/// The one switch: the backend `kind` names, as a `dyn Backend<Body = Vec<u8>>` (in process,
/// with room for `jobs` messages).
fn open(kind: &str, jobs: usize) -> Result<Opened, Box<dyn Error>> {
    let name = format!("visq-example-{}", std::process::id());
    match kind {
        "inprocess" => {
            let queue: Queue<Vec<u8>> = Queue::builder().capacity(jobs.max(1)).build()?;
            Ok(Opened {
                backend: Arc::new(queue),
                cleanup: Box::new(|| Ok(())),
            })
        }
        "rabbitmq" => rabbitmq(&name),
        "sqs" => sqs(&name),
        other => Err(format!("unknown backend {other:?}: inprocess, rabbitmq or sqs").into()),
    }
}

/// The address a broker's variable holds, or an error saying how to start one.
#[cfg_attr(not(any(feature = "rabbitmq", feature = "sqs")), allow(dead_code))]
fn address(var: &str, script: &str) -> Result<String, Box<dyn Error>> {
    std::env::var(var).map_err(|_| {
        format!("{var} is not set: start a local server with `source <({script} start)`").into()
    })
}

#[cfg(feature = "rabbitmq")]
fn rabbitmq(name: &str) -> Result<Opened, Box<dyn Error>> {
    let url = address("VISQ_RABBITMQ_URL", ".ci/rabbitmq.sh")?;
    let rabbit = Arc::new(visq::RabbitMq::builder(&url, name).build()?);
    let queues = Arc::clone(&rabbit);
    Ok(Opened {
        backend: rabbit,
        cleanup: Box::new(move || Ok(queues.delete_queues()?)),
    })
}

#[cfg(not(feature = "rabbitmq"))]
fn rabbitmq(_name: &str) -> Result<Opened, Box<dyn Error>> {
    Err("built without RabbitMQ: add `--features rabbitmq`".into())
}

#[cfg(feature = "sqs")]
fn sqs(name: &str) -> Result<Opened, Box<dyn Error>> {
    let endpoint = address("VISQ_SQS_ENDPOINT", ".ci/moto.sh")?;
    let sqs = Arc::new(visq::Sqs::builder(name).endpoint_url(&endpoint).build()?);
    let queues = Arc::clone(&sqs);
    Ok(Opened {
        backend: sqs,
        cleanup: Box::new(move || Ok(queues.delete_queues()?)),
    })
}

#[cfg(not(feature = "sqs"))]
fn sqs(_name: &str) -> Result<Opened, Box<dyn Error>> {
    Err("built without SQS: add `--features sqs`".into())
}

/// The job: what a worker does with a message's body. Returns the job's number and result.
fn handle(body: &[u8]) -> Result<(u64, u64), String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
    let n: u64 = text
        .strip_prefix("job ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("not a job: {text:?}"))?;
    Ok((n, n * n))
}

/// What the pool did.
#[derive(Default)]
struct Done {
    /// The jobs processed, with their results.
    results: Vec<(u64, u64)>,
    /// Handler runs that failed and were retried (redeliveries).
    redelivered: usize,
    /// When the last job was processed.
    finished: Option<Instant>,
}

/// The worker pool: a [`Consumer`] over the backend, `workers` threads, until `jobs` are done;
/// then a graceful stop.
fn work(backend: &Arc<Bytes>, jobs: usize, workers: usize) -> Result<Done, Box<dyn Error>> {
    let done = Arc::new(Mutex::new(Done::default()));
    let record = Arc::clone(&done);
    let pool = Consumer::backend_builder(Arc::clone(backend))
        .workers(workers)
        .start(move |body: &Vec<u8>| {
            let result = handle(body)?;
            let mut done = record.lock().expect("no handler panics holding it");
            done.results.push(result);
            if done.results.len() == jobs {
                done.finished = Some(Instant::now());
            }
            Ok::<(), String>(())
        })?;
    let give_up = Instant::now() + GIVE_UP;
    while pool.stats().processed < jobs as u64 {
        if Instant::now() > give_up {
            return Err(format!("not every job was done within {GIVE_UP:?}").into());
        }
        thread::sleep(Duration::from_millis(5));
    }
    if !pool.stop(Duration::from_secs(10)) {
        return Err("the pool did not stop within 10 s".into());
    }
    let mut done = std::mem::take(&mut *done.lock().expect("the pool has stopped"));
    done.redelivered = pool.stats().retried as usize;
    Ok(done)
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = options()?;
    let Opened { backend, cleanup } = open(&options.backend, options.jobs)?;
    let started = Instant::now();
    let batch: Vec<_> = (0..options.jobs)
        .map(|n| Outgoing::new(format!("job {n}").into_bytes()))
        .collect();
    let max_batch = backend.capabilities().max_batch.max(1);
    let mut sent = 0;
    for chunk in batch.chunks(max_batch) {
        for result in backend.send_batch(chunk.to_vec()) {
            result?;
            sent += 1;
        }
    }
    let outcome = work(&backend, options.jobs, options.workers);
    let cleaned = cleanup();
    let mut done = outcome?;
    cleaned?;
    done.results.sort_unstable();
    let expected: Vec<u64> = (0..options.jobs as u64).collect();
    let got: Vec<u64> = done.results.iter().map(|(n, _)| *n).collect();
    println!(
        "{}: sent {sent} jobs, processed {} ({} retried) with {} workers in {:.2?}",
        options.backend,
        done.results.len(),
        done.redelivered,
        options.workers,
        done.finished.unwrap_or_else(Instant::now) - started
    );
    let shown: Vec<String> = done
        .results
        .iter()
        .take(5)
        .map(|(n, square)| format!("job {n} -> {square}"))
        .collect();
    println!("first results: {}", shown.join(", "));
    if got != expected {
        return Err("some jobs were lost or processed twice".into());
    }
    Ok(())
}
