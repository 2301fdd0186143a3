//! Memory: bytes per held message and peak RSS with a million messages in flight, and
//! allocations per message in steady state.
//!
//! Each measurement runs in a fresh child process (the same binary, re-executed with
//! `--memory-child QUEUE PAYLOAD`), so that its peak RSS (`VmHWM` in `/proc/self/status`) is
//! its own. The binary's global allocator must be [`Counting`], which counts the bytes and
//! allocations made while counting is switched on.
//!
//! * **build bytes / capacity**: what `build()` allocates for a queue of 1 M, per slot: the
//!   queue's whole footprint per held message, body storage included;
//! * **held bytes / message**: everything allocated from before `build()` until 1 M messages
//!   are in flight (deliveries dropped), per message;
//! * **peak RSS / message**: the growth of `VmHWM` over the child's RSS before `build()`;
//! * **allocations / message**: in a send, receive, delete loop on a small queue.
//!
//! [`visq_parts`] adds visq's own itemised account ([`visq::Queue::memory`]): slots, rings,
//! wheel, death records, per slot.

use super::adapters::{Config, Contender, Lease};
use super::lockref::LockRef;
use super::throughput::lease_once;
use super::tutorial::Tutorial;
use super::{Body64, Payload};
use std::alloc::{GlobalAlloc, Layout};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Messages held in flight for the measurement.
pub const HELD: usize = 1_000_000;
/// The longest a memory child may run.
const CHILD_LIMIT: Duration = Duration::from_secs(120);
/// The argument that makes a binary a memory child.
pub const CHILD_FLAG: &str = "--memory-child";

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// A global allocator that forwards to `A` and, while counting is on, counts live bytes and
/// allocations (all threads). Off, it costs one relaxed load per call.
pub struct Counting<A>(pub A);

// SAFETY: every method forwards to the inner allocator with the caller's arguments; counting
// touches only atomics and never allocates.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let ptr = unsafe { self.0.alloc(layout) };
        if COUNTING.load(Ordering::Relaxed) && !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let ptr = unsafe { self.0.alloc_zeroed(layout) };
        if COUNTING.load(Ordering::Relaxed) && !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let new = unsafe { self.0.realloc(ptr, layout, new_size) };
        if COUNTING.load(Ordering::Relaxed) && !new.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

/// Switches counting on, from zero.
pub fn start_counting() {
    LIVE_BYTES.store(0, Ordering::SeqCst);
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
}

pub fn stop_counting() {
    COUNTING.store(false, Ordering::SeqCst);
}

/// Bytes allocated and not yet freed since [`start_counting`].
pub fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::SeqCst)
}

/// Allocations (and reallocations) since [`start_counting`].
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), or 0 where there is none.
pub fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

/// One child's measurement.
#[derive(Clone, Debug)]
pub struct Memory {
    pub contender: Contender,
    pub payload: &'static str,
    /// `size_of` the body.
    pub body_bytes: usize,
    /// Allocated by `build()` for `HELD` capacity.
    pub build_bytes: i64,
    /// Allocated from before `build()` until `HELD` messages are in flight.
    pub held_bytes: i64,
    pub rss_before_kb: u64,
    pub peak_rss_kb: u64,
    /// Allocations per send, receive, delete.
    pub allocations_per_message: f64,
}

impl Memory {
    pub fn build_per_message(&self) -> f64 {
        self.build_bytes as f64 / HELD as f64
    }

    pub fn held_per_message(&self) -> f64 {
        self.held_bytes as f64 / HELD as f64
    }

    /// Queue overhead beyond the body, from what `build()` and holding allocated.
    pub fn overhead_per_message(&self) -> f64 {
        self.held_per_message() - self.body_bytes as f64
    }

    pub fn peak_rss_per_message(&self) -> f64 {
        self.peak_rss_kb.saturating_sub(self.rss_before_kb) as f64 * 1024.0 / HELD as f64
    }
}

/// The capacity visq's parts are itemised at (issue 10: 2^20).
pub const ITEMISED_CAPACITY: usize = 1 << 20;

/// What `build()` allocated for a visq queue of [`ITEMISED_CAPACITY`] `u64` messages, part by
/// part (its own account, [`visq::Queue::memory`]): plain, and with a dead-letter queue (which
/// adds the death records).
pub fn visq_parts() -> [(&'static str, visq::Memory); 2] {
    let plain = visq::Queue::<u64>::builder()
        .capacity(ITEMISED_CAPACITY)
        .build()
        .expect("valid settings")
        .memory();
    let dlq = std::sync::Arc::new(
        visq::Queue::<u64>::builder()
            .capacity(1)
            .build()
            .expect("valid settings"),
    );
    let with_dlq = visq::Queue::<u64>::builder()
        .capacity(ITEMISED_CAPACITY)
        .dead_letter(dlq, 5)
        .build()
        .expect("valid settings")
        .memory();
    [("plain", plain), ("with a dead-letter queue", with_dlq)]
}

/// The payload names a child understands.
pub const PAYLOADS: [&str; 2] = [<u64 as Payload>::NAME, <Body64 as Payload>::NAME];

/// If this process was started as a memory child, measures, prints and exits.
pub fn child_main_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == CHILD_FLAG) else {
        return;
    };
    let contender = args
        .get(at + 1)
        .and_then(|key| Contender::from_key(key))
        .expect("a queue key after --memory-child");
    let payload = args.get(at + 2).map(String::as_str).unwrap_or("u64");
    let line = match (contender, payload) {
        (Contender::Visq, "u64") => child::<visq::Queue<u64>, u64>(),
        (Contender::Visq, _) => child::<visq::Queue<Body64>, Body64>(),
        (Contender::LockRef, "u64") => child::<LockRef<u64>, u64>(),
        (Contender::LockRef, _) => child::<LockRef<Body64>, Body64>(),
        (Contender::Tutorial, "u64") => child::<Tutorial<u64>, u64>(),
        (Contender::Tutorial, _) => child::<Tutorial<Body64>, Body64>(),
        (other, _) => panic!("no memory measurement for {}", other.name()),
    };
    println!("{line}");
    std::process::exit(0);
}

fn child<Q: Lease<P>, P: Payload>() -> String {
    let rss_before = status_kb("VmRSS");
    start_counting();
    let q = Q::build(&Config::new(HELD));
    let build_bytes = live_bytes();
    for n in 0..HELD as u64 {
        assert!(q.send(P::make(n)).is_ok(), "room for every message");
        drop(q.try_receive().expect("the message just sent"));
    }
    let held_bytes = live_bytes();
    let peak = status_kb("VmHWM");
    stop_counting();
    drop(q);

    let small = Q::build(&Config::new(1024));
    for n in 0..1000 {
        lease_once(&small, n);
    }
    let ops = 100_000;
    start_counting();
    for n in 0..ops {
        lease_once(&small, n);
    }
    let allocations = allocations();
    stop_counting();
    format!(
        "MEMORY {build_bytes} {held_bytes} {rss_before} {peak} {}",
        allocations as f64 / ops as f64
    )
}

/// Runs a memory child for `contender` and `payload` ("u64" or "64 B"); `None` if it failed.
pub fn measure(contender: Contender, payload: &'static str) -> Option<Memory> {
    let exe = std::env::current_exe().ok()?;
    let mut child = Command::new(exe)
        .arg(CHILD_FLAG)
        .arg(contender.key())
        .arg(if payload == "u64" { "u64" } else { "64B" })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Bounded: a child that has not finished in CHILD_LIMIT is killed and counts as failed.
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < CHILD_LIMIT => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let output = child.wait_with_output().ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("MEMORY "))?;
    let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
    Some(Memory {
        contender,
        payload,
        body_bytes: if payload == "u64" { 8 } else { 64 },
        build_bytes: fields.first()?.parse().ok()?,
        held_bytes: fields.get(1)?.parse().ok()?,
        rss_before_kb: fields.get(2)?.parse().ok()?,
        peak_rss_kb: fields.get(3)?.parse().ok()?,
        allocations_per_message: fields.get(4)?.parse().ok()?,
    })
}
