//! A full disk under the real `lse_server`: its data directory on a small
//! tmpfs the test mounts, concurrent writers fill it until writes fail, and
//! every answer is held to the README's rule (`durability_oracle`): OK must
//! be there, now and after a restart; UNKNOWN may be; any other error must
//! not be. Then the test frees room, stops the server (SIGTERM, exit 0),
//! starts it again, checks the store once more, and writes again.
//!
//! Mounting needs root (CI runs as root). Without it, when the mount fails,
//! or with `STRATUM_SKIP_ROOT_TESTS=1`, the test says why and returns: it
//! then passes without checking anything.
//!
//! What tmpfs cannot show: it has no device behind it, so its fsync never
//! fails, and a write is never answered UNKNOWN here (the rule for it is
//! checked all the same, should one come). What it does show: `write`
//! failing with ENOSPC, in an append, a segment rotation, a compaction's
//! `merged.seg.tmp` or a hint file.

mod durability_oracle;
mod server_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use durability_oracle::*;
use server_support::*;
use stratum::proto;
use tonic::Code;

const WRITERS: u64 = 4;
/// The file system's size, and files that take part of it until the test
/// deletes them, one per round, to make room again.
const TMPFS_SIZE: &str = "8m";
const BALLAST_BYTES: usize = 3 << 20;
/// Times the disk is filled: each round frees one part of the ballast.
const ROUNDS: usize = 4;
/// What a write may be answered with on a full disk, besides what its
/// writer asks for.
const TOLERATED: [Code; 3] = [Code::Internal, Code::Unavailable, Code::Unknown];
/// No writer deletes problems for room: the store only grows.
const SHAPE: Shape = Shape { problems: usize::MAX, cases: 12 };
/// The store fills in a few seconds; this only ends a run that never does.
const FILL_LIMIT: Duration = Duration::from_secs(60);
/// Writes per writer once there is room again.
const WRITES_AFTER: usize = 8;

fn server_args() -> Vec<&'static str> {
    durability_oracle::server_args("65536")
}

/// A tmpfs mounted on a temporary directory for as long as this lives.
struct Tmpfs {
    mount_point: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let mount_point = tempfile::tempdir().map_err(|e| format!("cannot make a mount point: {e}"))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(mount_point.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("mount -t tmpfs failed ({}): {}", output.status, stderr.trim()));
        }
        Ok(Tmpfs { mount_point })
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for Tmpfs {
    /// Unmounts, even when the test fails (the servers, declared after the
    /// mount, are dropped and killed first). The directory goes after.
    fn drop(&mut self) {
        let path = self.mount_point.path();
        let unmounted = Command::new("umount").arg(path).status().is_ok_and(|s| s.success());
        if !unmounted {
            eprintln!("umount {} failed; detaching it lazily", path.display());
            let _ = Command::new("umount").arg("-l").arg(path).status();
        }
    }
}

/// The tmpfs this test needs, or why it cannot have one.
fn mount_or_skip() -> Option<Tmpfs> {
    if std::env::var("STRATUM_SKIP_ROOT_TESTS").is_ok_and(|v| v == "1") {
        println!("full disk test skipped: STRATUM_SKIP_ROOT_TESTS=1");
        return None;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("full disk test skipped: mounting a tmpfs needs root");
        return None;
    }
    match Tmpfs::mount(TMPFS_SIZE) {
        Ok(fs) => Some(fs),
        Err(why) => {
            println!("full disk test skipped: {why}");
            None
        }
    }
}

/// Fails the test if a writer had a surprise or the check found a broken
/// rule.
#[track_caller]
fn assert_clean(writers: &[Writer], check: &Check, seed: u64, when: &str) {
    let mut all: Vec<String> = writers.iter().flat_map(|w| w.surprises.iter().cloned()).collect();
    all.extend(check.violations.iter().cloned());
    assert!(
        all.is_empty(),
        "seed {seed} (STRATUM_FULL_DISK_SEED={seed}), {when}: {} problems:\n  {}",
        all.len(),
        all.join("\n  ")
    );
}

/// Runs every writer on `server` until each stops (see [`Writer::run`]).
async fn run_writers(server: &TestServer, writers: Vec<Writer>, run: &Arc<Run>) -> Vec<Writer> {
    let mut handles = Vec::new();
    for w in writers {
        handles.push(tokio::spawn(w.run(server.client().await, run.clone())));
    }
    let mut done = Vec::new();
    for handle in handles {
        done.push(handle.await.expect("writer task"));
    }
    done
}

fn answers(writers: &[Writer]) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for (kind, n) in writers.iter().flat_map(|w| w.answers.iter()) {
        *all.entry(kind.clone()).or_default() += n;
    }
    all
}

fn ids_seen(writers: &[Writer], store: &BTreeMap<u64, ProblemDump>) -> u64 {
    writers.iter().map(|w| w.model.max_id()).chain([max_id(store)]).max().unwrap_or(0)
}

/// Writes with every writer until each is refused (the disk is full),
/// with CompactNow called beside them. Returns the writers and what
/// CompactNow was answered.
async fn fill(server: &TestServer, writers: Vec<Writer>, ids_above: u64) -> (Vec<Writer>, BTreeMap<String, u64>) {
    let run = Run::new(ids_above, TOLERATED.to_vec(), None);
    let limit = {
        let run = run.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FILL_LIMIT).await;
            run.stop();
        })
    };
    let writing = Arc::new(AtomicBool::new(true));
    let compacting = {
        let (mut c, writing) = (server.client().await, writing.clone());
        tokio::spawn(async move {
            let mut answers: BTreeMap<String, u64> = BTreeMap::new();
            while writing.load(Ordering::SeqCst) {
                let kind = match c.compact_now(proto::CompactNowRequest {}).await {
                    Ok(r) if r.get_ref().segments_in > 0 => "merged".to_string(),
                    Ok(_) => "nothing to merge".to_string(),
                    Err(s) => format!("{:?}", s.code()),
                };
                *answers.entry(kind).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            answers
        })
    };
    let writers = run_writers(server, writers, &run).await;
    writing.store(false, Ordering::SeqCst);
    let compactions = compacting.await.expect("compaction task");
    assert!(!run.is_stopped(), "the disk did not fill within {FILL_LIMIT:?}: {:?}", answers(&writers));
    limit.abort();
    (writers, compactions)
}

fn ok_answers(writers: &[Writer]) -> u64 {
    answers(writers).get("ok").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_loses_no_acknowledged_one() {
    let Some(fs) = mount_or_skip() else { return };
    let seed = std::env::var("STRATUM_FULL_DISK_SEED").ok().map_or_else(
        || SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007,
        |s| s.trim().parse().expect("STRATUM_FULL_DISK_SEED is a number"),
    );
    println!("full disk: seed {seed}");
    let started = Instant::now();
    let ballast: Vec<PathBuf> = (0..ROUNDS).map(|i| fs.path().join(format!("ballast{i}"))).collect();
    for path in &ballast {
        std::fs::write(path, vec![0xA5; BALLAST_BYTES / ROUNDS]).unwrap();
        std::fs::File::open(path).unwrap().sync_all().unwrap();
    }
    let data = fs.path().join("data");
    let mut server = TestServer::start(&data, &server_args()).await;
    let mut writers: Vec<Writer> = (0..WRITERS).map(|w| Writer::new(w, seed, SHAPE)).collect();
    let mut ids = 0;
    let mut compactions: BTreeMap<String, u64> = BTreeMap::new();
    let mut write_errors = Vec::new();

    // Each round fills the disk, then frees a little of it and restarts.
    for (round, ballast) in ballast.iter().enumerate() {
        let (filled, merges) = fill(&server, writers, ids).await;
        writers = filled;
        assert_clean(&writers, &Check::default(), seed, &format!("round {round}, filling the disk"));
        for (kind, n) in merges {
            *compactions.entry(kind).or_default() += n;
        }
        let mut c = server.client().await;
        let write_error = stats(&mut c).await.write_error;
        assert!(!write_error.is_empty(), "round {round}: writes failed, but the server does not refuse them");
        write_errors.push(write_error);

        // More writes are refused; the store still reads, and shows
        // exactly what the answers allow.
        let acked = ok_answers(&writers);
        writers = run_writers(&server, writers, &Run::new(ids, TOLERATED.to_vec(), Some(3))).await;
        assert_eq!(ok_answers(&writers), acked, "round {round}: a write was acknowledged while writes are refused");
        let check = check_only(&writers, &dump_all(&mut c).await);
        assert_clean(&writers, &check, seed, &format!("round {round}, on the full disk"));

        // Some room again; a clean stop, a start, and the same store.
        std::fs::remove_file(ballast).unwrap();
        drop(c);
        server.stop().await;
        server = TestServer::start(&data, &server_args()).await;
        let store = dump_all(&mut server.client().await).await;
        let check = check_and_settle(&mut writers, &store);
        assert_clean(&writers, &check, seed, &format!("round {round}, after the restart"));
        ids = ids_seen(&writers, &store);
    }
    let refused_writes: usize = writers.iter().map(|w| w.model.refused.len()).sum();

    // Writes work again, and survive a restart.
    let mut c = server.client().await;
    writers = run_writers(&server, writers, &Run::new(ids, Vec::new(), Some(WRITES_AFTER))).await;
    let check = check_and_settle(&mut writers, &dump_all(&mut c).await);
    assert_clean(&writers, &check, seed, "writing again");
    for w in &writers {
        assert_eq!(w.ops, WRITES_AFTER as u64, "writer {} stopped early: {:?}", w.model.writer, w.answers);
    }
    drop(c);
    server.stop().await;
    let server = TestServer::start(&data, &server_args()).await;
    let mut c = server.client().await;
    let store = dump_all(&mut c).await;
    let check = check_and_settle(&mut writers, &store);
    assert_clean(&writers, &check, seed, "after the last restart");
    drop(c);
    server.stop().await;

    println!(
        "full disk: {ROUNDS} rounds in {:.1} s; answers {:?}; {refused_writes} refused writes absent; \
         CompactNow answers {compactions:?}",
        started.elapsed().as_secs_f64(),
        answers(&writers)
    );
    println!("full disk: the server said: {write_errors:?}");
    let test_cases: usize = store.values().map(|p| p.test_cases.len()).sum();
    println!("full disk: at the end {} problems, {test_cases} test cases", store.len());
}
