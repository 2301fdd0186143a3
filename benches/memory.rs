//! Memory per held message, visq against the lock-based reference (and the tutorial design):
//! bytes `build()` allocates per slot, bytes allocated per message with 1 M in flight, the
//! peak RSS growth (`VmHWM`) with 1 M in flight, and allocations per send, receive, delete.
//! Each measurement runs in a fresh child process (this binary, re-executed); see
//! `common/memory.rs`.
//!
//! Run: `cargo bench --bench memory`.

#[path = "common/mod.rs"]
mod common;

use common::adapters::Contender;
use common::memory::{self, Counting, HELD, ITEMISED_CAPACITY, PAYLOADS};

#[global_allocator]
static GLOBAL: Counting<mimalloc::MiMalloc> = Counting(mimalloc::MiMalloc);

fn main() {
    memory::child_main_if_asked();
    println!(
        "\nvisq's build() for {ITEMISED_CAPACITY} u64 slots, bytes per slot (Queue::memory)\n"
    );
    println!(
        "{:<26} {:>8} {:>8} {:>8} {:>14} {:>8} {:>8} {:>12}",
        "queue", "slots", "rings", "wheel", "death records", "latency", "total", "beyond body"
    );
    for (what, m) in memory::visq_parts() {
        let per = |bytes: usize| bytes as f64 / m.capacity as f64;
        println!(
            "{:<26} {:>8.1} {:>8.1} {:>8.1} {:>14.1} {:>8.1} {:>8.1} {:>12.1}",
            what,
            per(m.slots),
            per(m.rings),
            per(m.wheel),
            per(m.death_records),
            per(m.latency),
            m.per_slot(),
            m.per_slot() - std::mem::size_of::<u64>() as f64
        );
    }
    println!("\nMemory with {HELD} messages in flight (bytes per message)\n");
    println!(
        "{:<16} {:>7} {:>14} {:>14} {:>16} {:>14} {:>12}",
        "queue", "body", "build()/slot", "held/msg", "beyond body", "peak RSS/msg", "allocs/msg"
    );
    for contender in Contender::LEASING {
        for payload in PAYLOADS {
            match memory::measure(contender, payload) {
                Some(m) => println!(
                    "{:<16} {:>7} {:>14.1} {:>14.1} {:>16.1} {:>14.1} {:>12.2}",
                    contender.name(),
                    payload,
                    m.build_per_message(),
                    m.held_per_message(),
                    m.overhead_per_message(),
                    m.peak_rss_per_message(),
                    m.allocations_per_message
                ),
                None => println!(
                    "{:<16} {:>7}  (the measurement failed)",
                    contender.name(),
                    payload
                ),
            }
        }
    }
}
