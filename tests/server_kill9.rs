//! SIGKILL, again and again, at random moments of the real `lse_server`
//! under the default `--sync always`, while writers, readers and compactions
//! run; after every restart on the same directory the whole store is
//! checked against what each writer was answered (`durability_oracle`):
//! every acknowledged write is there (or a later value in doubt is), no
//! acknowledged delete is undone, nothing refused and nothing never written
//! is visible, chains are in id order, and no id is handed out twice.
//!
//! Tiny segments and an eager compactor (plus a task calling CompactNow)
//! make a good share of the kills land inside a compaction; the report
//! counts them (a `merged.seg.tmp` left on disk by the killed process).
//!
//! `STRATUM_KILL9_SEED` repeats a run's choices (the operations and kill
//! times; the interleaving of the tasks is the machine's), and
//! `STRATUM_KILL9_CYCLES` sets how many kills (40 by default; hundreds for
//! a soak run):
//!
//! ```sh
//! STRATUM_KILL9_CYCLES=300 cargo test --test server_kill9 -- --nocapture
//! ```

mod durability_oracle;
mod server_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use durability_oracle::*;
use server_support::*;
use stratum::proto;
use tokio::task::JoinHandle;

const WRITERS: u64 = 4;
const READERS: u64 = 2;
const DEFAULT_CYCLES: usize = 40;
/// Each writer keeps at most this much of the store live: 4 writers hold a
/// few MiB, enough for a compaction to take a while.
const SHAPE: Shape = Shape { problems: 6, cases: 10 };

fn server_args() -> Vec<&'static str> {
    let mut args = durability_oracle::server_args("4096");
    args.extend(["--log", "info"]);
    args
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(text.trim().parse().unwrap_or_else(|e| panic!("{name}={text:?}: {e}")))
}

/// What the compaction task saw.
#[derive(Debug, Default)]
struct CompactorReport {
    /// CompactNow calls that merged something.
    compactions: u64,
    surprises: Vec<String>,
}

/// Calls CompactNow every few milliseconds until the run stops; `busy` is
/// set while a call is out.
async fn compact_until_stopped(mut c: Client, seed: u64, run: Arc<Run>, busy: Arc<AtomicBool>) -> CompactorReport {
    let mut rng = Rng::new(seed);
    let mut report = CompactorReport::default();
    while !run.is_stopped() {
        busy.store(true, Ordering::SeqCst);
        let answer = c.compact_now(proto::CompactNowRequest {}).await;
        busy.store(false, Ordering::SeqCst);
        match answer {
            Ok(r) if r.get_ref().segments_in > 0 => report.compactions += 1,
            Ok(_) => {}
            Err(_) if run.is_stopped() => break,
            Err(s) => {
                report.surprises.push(format!("CompactNow: {s:?}"));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
    }
    report
}

/// The `q` quantile of sorted durations, in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

/// Starts the server on `dir` and waits for its first answer: the server
/// and the time from the spawn to that answer. A server that cannot start
/// (recovery refused the directory) fails the test.
async fn start_serving(dir: &Path, seed: u64, cycle: usize) -> (TestServer, Client, Duration) {
    let started = Instant::now();
    let server = match TestServer::try_start(dir, &server_args()).await {
        Ok(server) => server,
        Err(exited) => {
            panic!("seed {seed}, cycle {cycle}: lse_server did not start ({}):\n{}", exited.status, exited.stderr)
        }
    };
    let mut c = server.client().await;
    stats(&mut c).await;
    (server, c, started.elapsed())
}

/// Fails the test with everything needed to look into it: the seed, the
/// cycle, the server's log, and the data directory, which is kept.
fn fail(seed: u64, cycle: usize, dir: tempfile::TempDir, server: &TestServer, what: &[String]) -> ! {
    let kept = dir.keep();
    let log = server.stderr();
    let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
    panic!(
        "seed {seed} (STRATUM_KILL9_SEED={seed}), cycle {cycle}: {} problems:\n  {}\ndata directory kept at {}\nserver log (tail):\n{}",
        what.len(),
        what.iter().take(30).cloned().collect::<Vec<_>>().join("\n  "),
        kept.display(),
        tail.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_write_and_shows_no_refused_one() {
    let seed = env_number("STRATUM_KILL9_SEED").unwrap_or_else(|| {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007
    });
    let cycles = env_number("STRATUM_KILL9_CYCLES").map_or(DEFAULT_CYCLES, |n| n as usize);
    println!("kill9: seed {seed} (STRATUM_KILL9_SEED={seed} repeats its choices), {cycles} cycles");
    let test_started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("merged.seg.tmp");
    let mut rng = Rng::new(seed);
    let mut writers: Vec<Writer> = (0..WRITERS).map(|w| Writer::new(w, seed, SHAPE)).collect();
    let mut ids_seen = 0;
    let mut restarts = Vec::new();
    let (mut kills_in_merge, mut kills_in_compact_now, mut compactions) = (0, 0, 0);
    let (mut applied, mut not_applied, mut reads) = (0, 0, 0);

    let (mut server, mut c, _) = start_serving(dir.path(), seed, 0).await;
    for cycle in 1..=cycles {
        let run = Run::new(ids_seen, Vec::new(), None);
        let busy = Arc::new(AtomicBool::new(false));
        let mut writing: Vec<JoinHandle<Writer>> = Vec::new();
        for w in writers.drain(..) {
            writing.push(tokio::spawn(w.run(server.client().await, run.clone())));
        }
        let mut reading = Vec::new();
        for r in 0..READERS {
            reading.push(tokio::spawn(read_until_stopped(
                server.client().await,
                seed ^ mix(cycle as u64 * 8 + r),
                run.clone(),
            )));
        }
        let compacting = tokio::spawn(compact_until_stopped(
            server.client().await,
            seed ^ mix(cycle as u64),
            run.clone(),
            busy.clone(),
        ));

        // A third of the kills wait for a merge to be under way; the rest
        // come at a random time.
        if rng.below(3) == 0 {
            let deadline = Instant::now() + Duration::from_millis(1500);
            while !tmp.exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_micros(rng.below(4000))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(30 + rng.below(570))).await;
        }
        if let Ok(s) = c.get_stats(proto::GetStatsRequest {}).await {
            compactions += s.into_inner().compactions;
        }
        kills_in_compact_now += u64::from(busy.load(Ordering::SeqCst));
        run.stop();
        server.kill9().await;
        // The process is gone: a merged.seg.tmp on disk is a merge it was
        // killed in (a finished or failed one renames or removes it).
        kills_in_merge += u64::from(tmp.exists());

        for handle in writing {
            writers.push(handle.await.expect("writer task"));
        }
        let mut surprises: Vec<String> = writers.iter().flat_map(|w| w.surprises.iter().cloned()).collect();
        for handle in reading {
            let report = handle.await.expect("reader task");
            reads += report.reads;
            surprises.extend(report.surprises);
        }
        surprises.extend(compacting.await.expect("compaction task").surprises);

        let (restarted, client, took) = start_serving(dir.path(), seed, cycle).await;
        (server, c) = (restarted, client);
        restarts.push(took);
        if !surprises.is_empty() {
            fail(seed, cycle, dir, &server, &surprises);
        }
        let store = dump_all(&mut c).await;
        let check = check_and_settle(&mut writers, &store);
        if !check.violations.is_empty() {
            fail(seed, cycle, dir, &server, &check.violations);
        }
        applied += check.applied;
        not_applied += check.not_applied;
        let handed_out = writers.iter().map(|w| w.model.max_id()).max().unwrap_or(0);
        ids_seen = ids_seen.max(max_id(&store)).max(handed_out);
    }
    server.stop().await;

    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    for (kind, n) in writers.iter().flat_map(|w| w.answers.iter()) {
        *answers.entry(kind.clone()).or_default() += n;
    }
    restarts.sort();
    println!(
        "kill9: {cycles} cycles in {:.1} s; kills inside a merge (merged.seg.tmp left): {kills_in_merge}, \
         with a CompactNow out: {kills_in_compact_now}; {compactions} compactions done before the kills",
        test_started.elapsed().as_secs_f64()
    );
    println!(
        "kill9: restart to first answer: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        quantile_ms(&restarts, 0.5),
        quantile_ms(&restarts, 0.99),
        quantile_ms(&restarts, 1.0)
    );
    println!(
        "kill9: answers {answers:?}; writes in doubt found applied {applied}, not applied {not_applied}; {reads} reads"
    );
}
