//! The real daemon under load: the release `bakewatch` binary run with generated configs in a
//! temp dir, one scenario per argument, each stopping by itself and printing a results table
//! (BENCHMARKS.md has the numbers, the method and how to reproduce them).
//!
//! ```text
//! cargo bench --bench daemon -- scale      # 10,000 checks on one core: scheduler lag, CPU, GET /metrics
//! cargo bench --bench daemon -- memory     # 1,000 checks: RSS over SOAK_MINUTES (default 60)
//! cargo bench --bench daemon -- api        # wrk on GET /api/v1/checks/{name}
//! cargo bench --bench daemon -- longpoll   # 1,000 idle verdict long-polls
//! cargo bench --bench daemon -- detect     # time from a target breaking to a `fail` verdict
//! cargo bench --bench daemon               # scale, api, longpoll and detect (not memory)
//! ```
//!
//! The daemon binary is `$BAKEWATCH_BIN`, else the one cargo built for this bench. Needs
//! nginx (Debian `nginx-light`), wrk and taskset.

#[path = "common/mod.rs"]
mod common;

#[path = "daemon/api.rs"]
mod api;
#[path = "daemon/detect.rs"]
mod detect;
#[path = "daemon/harness.rs"]
mod harness;
#[path = "daemon/longpoll.rs"]
mod longpoll;
#[path = "daemon/memory.rs"]
mod memory;
#[path = "daemon/scale.rs"]
mod scale;

const SCENARIOS: &[&str] = &["scale", "memory", "api", "longpoll", "detect"];

/// `"10s"`, `"500ms"`, `"2m"` (the forms the generated configs use).
pub fn parse_duration(s: &str) -> std::time::Duration {
    humantime::parse_duration(s).expect("a duration")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs bench binaries too; only `cargo bench` passes --bench.
    if !args.iter().any(|a| a == "--bench") {
        println!("daemon: skipped outside `cargo bench`");
        return;
    }
    let mut chosen: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    if chosen.is_empty() {
        chosen = match std::env::var("SCENARIO") {
            Ok(s) => s.split(',').map(str::to_string).collect(),
            Err(_) => ["scale", "api", "longpoll", "detect"]
                .map(String::from)
                .to_vec(),
        };
    }
    for c in &chosen {
        assert!(
            SCENARIOS.contains(&c.as_str()),
            "unknown scenario {c:?}; one of {SCENARIOS:?}"
        );
    }
    harness::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for c in chosen {
        println!("== {c} (bakewatch {})", harness::bin().display());
        rt.block_on(async {
            match c.as_str() {
                "scale" => scale::run().await,
                "memory" => memory::run().await,
                "api" => api::run().await,
                "longpoll" => longpoll::run().await,
                "detect" => detect::run().await,
                _ => unreachable!(),
            }
        });
        println!();
    }
}
