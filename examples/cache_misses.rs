//! One operation of the timing-wheel benchmark, for a cache simulator: builds the fixture of
//! `benches/common/wheel.rs` (`PENDING` in-flight leases, deadlines spread over 30 s), runs
//! 1024 warm-up operations, then `OPS` more. Run it twice, with `OPS` = 0 and with `OPS` > 0,
//! under `valgrind --tool=cachegrind` and take the difference per operation:
//! `bash benches/cache_misses.sh` does that for visq and the lock-based reference and writes
//! `results/cache-misses.md`.
//!
//! ```sh
//! cargo run --release --example cache_misses -- visq change 1000000 100000
//! ```

#[path = "../benches/common/mod.rs"]
mod common;

use common::adapters::Contender;
use common::wheel::{AnyFixture, Op};

/// Says how to call this and exits with status 2.
fn usage() -> ! {
    eprintln!("usage: cache_misses visq|lockref lease|expire|change PENDING OPS");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [queue, op, pending, ops] = args.as_slice() else {
        usage()
    };
    let contender = match queue.as_str() {
        "visq" => Contender::Visq,
        "lockref" => Contender::LockRef,
        _ => usage(),
    };
    let op = match op.as_str() {
        "lease" => Op::Lease,
        "expire" => Op::Expire,
        "change" => Op::Change,
        _ => usage(),
    };
    let (Ok(pending), Ok(ops)) = (pending.parse::<usize>(), ops.parse::<u64>()) else {
        usage()
    };
    let mut fixture = AnyFixture::new(contender, pending, op == Op::Change);
    fixture.run(op, 1024);
    if ops > 0 {
        std::hint::black_box(fixture.run(op, ops));
    }
}
