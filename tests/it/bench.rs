//! The benchmarks are correct, whatever their speed: the engine's run and the naive
//! baseline both collect, make about the same number of attempts per installment, and leave
//! databases that `verify` finds clean; `bench net` uses every channel without a 429.
//! No timing is asserted.

use crate::common::{pg_server, Backend, PgGuard};
use repayd::app::bench::{run_bench, run_net_bench, BenchOptions, NetBenchOptions};

/// A bench database of the test's own: a temp SQLite file, or a uniquely named PostgreSQL
/// database (and its `_naive` sibling), dropped by the guards when the test ends.
fn bench_database(backend: Backend, dir: &tempfile::TempDir, tag: &str) -> (String, Vec<PgGuard>) {
    match backend {
        Backend::Sqlite => {
            let file = dir.path().join(format!("it_{tag}_bench.db"));
            (format!("sqlite://{}", file.display()), Vec::new())
        }
        Backend::Postgres => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let name = format!("it_{tag}_bench_{}_{nanos}", std::process::id());
            let guards = vec![
                PgGuard::new(Some(name.clone())),
                PgGuard::new(Some(format!("{name}_naive"))),
            ];
            (format!("{}/{name}", pg_server()), guards)
        }
    }
}

async fn the_bench_and_its_naive_baseline_are_correct(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _guards) = bench_database(backend, &dir, "run");
    for per_loan in [1, 3] {
        let opts = BenchOptions {
            database_url: url.clone(),
            installments: 300,
            per_loan,
            repeat: 1,
        };
        let r = run_bench(&opts, &|_| {}).await.expect("bench run");
        let m = &r.median;
        assert!(m.run_attempts > 0, "{m:?}");
        assert!(m.naive_attempts > 0, "{m:?}");
        assert_eq!(m.naive_installments, 300);
        // One due installment per loan; about 10% of accounts step down the ladder.
        let (engine, naive) = (
            m.run_attempts_per_due_installment,
            m.naive_attempts_per_due_installment,
        );
        assert!(
            (1.0..2.0).contains(&engine),
            "engine {engine} attempts per installment"
        );
        assert!(
            (naive - engine).abs() <= 0.05 * engine,
            "naive {naive} vs engine {engine} attempts per installment"
        );
        assert_eq!(m.verify_findings, 0, "engine database: {m:?}");
        assert_eq!(m.naive_verify_findings, 0, "naive database: {m:?}");
        assert!(m.engine_vs_naive > 0.0);
    }
}

both_backends!(the_bench_and_its_naive_baseline_are_correct);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_net_uses_every_channel_at_once_without_429s() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _guards) = bench_database(Backend::Sqlite, &dir, "net");
    let opts = NetBenchOptions {
        database_url: url,
        installments: 300,
        latency_median_ms: 5,
        tps: vec![150, 500, 2000],
        daemons: 1,
    };
    let r = run_net_bench(&opts, &|_| {}).await.expect("bench net");
    assert_eq!(r.http_429s, 0, "{r:?}");
    assert_eq!(r.channels.len(), 3);
    for c in &r.channels {
        assert!(c.attempts > 0, "{c:?}");
        assert_eq!(c.http_429s, 0, "{c:?}");
    }
    assert_eq!(r.attempts, 300, "one attempt per loan, all funded");
    // Several daemons are refused (for now) before anything is touched.
    let too_many = NetBenchOptions {
        database_url: "sqlite://unused_bench.db".into(),
        installments: 1,
        latency_median_ms: 1,
        tps: vec![150],
        daemons: 2,
    };
    assert!(run_net_bench(&too_many, &|_| {}).await.is_err());
}
