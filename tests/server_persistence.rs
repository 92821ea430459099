//! Persistence across restarts of the real `lse_server` binary: a clean
//! SIGTERM keeps everything, and a SIGKILL under the default `always` sync
//! policy keeps every acknowledged write.

mod server_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use server_support::*;
use stratum::proto;
use tokio::task::JoinSet;

/// Writes a varied store: every value kind, replaced blobs, columns, test
/// cases and outputs, deleted test cases and outputs, and a deleted problem
/// that holds the highest id. Returns the highest id handed out.
async fn write_varied_store(c: &mut Client) -> u64 {
    let values = [
        int(i64::MIN),
        int(i64::MAX),
        double(-0.0),
        double(f64::NAN),
        double(f64::NEG_INFINITY),
        string(""),
        string("ünïcødé 🦀"),
        int_list(vec![]),
        int_list(vec![3, -1, 4]),
        string_list(&["", "a", "ü"]),
        string_map(&[("", ""), ("k", "v")]),
    ];
    let mut max_id = 0;
    for i in 0..8usize {
        let p = create(c, &format!("<p>problem {i}</p>"), columns(&[("name", &format!("p{i}")), ("n", "1")])).await;
        max_id = max_id.max(p);
        let mut tcs = Vec::new();
        for j in 0..5usize {
            let value = values[(i + j) % values.len()].clone();
            let tc = add(c, p, value).await;
            max_id = max_id.max(tc);
            if j % 2 == 0 {
                set_output(c, p, tc, values[(i * 3 + j) % values.len()].clone()).await;
            }
            tcs.push(tc);
        }
        if i % 2 == 0 {
            let request = proto::UpdateProblemHtmlRequest {
                problem_id: p,
                html: format!("<p>updated {i}</p>"),
                ..Default::default()
            };
            c.update_problem_html(request).await.unwrap();
            let request = proto::UpdateProblemColumnRequest {
                problem_id: p,
                name: "n".into(),
                value: "2".into(),
                ..Default::default()
            };
            c.update_problem_column(request).await.unwrap();
            let request = proto::UpdateTestCaseRequest {
                problem_id: p,
                test_case_id: tcs[1],
                value: Some(int(-7)),
                ..Default::default()
            };
            c.update_test_case(request).await.unwrap();
            let request = proto::UpdateExpectedOutputRequest {
                problem_id: p,
                test_case_id: tcs[0],
                value: Some(double(0.25)),
                ..Default::default()
            };
            c.update_expected_output(request).await.unwrap();
        }
        c.delete_test_case(proto::TestCaseRef { problem_id: p, test_case_id: tcs[3], ..Default::default() })
            .await
            .unwrap();
        c.delete_expected_output(proto::TestCaseRef { problem_id: p, test_case_id: tcs[1], ..Default::default() })
            .await
            .unwrap_err();
        c.delete_expected_output(proto::TestCaseRef { problem_id: p, test_case_id: tcs[2], ..Default::default() })
            .await
            .unwrap();
    }
    // The newest problem and its test case are deleted: their ids must not
    // be handed out again after a restart.
    let doomed = create(c, "doomed", Columns::new()).await;
    let doomed_tc = add(c, doomed, int(0)).await;
    c.delete_problem(proto::ProblemRef { problem_id: doomed, ..Default::default() }).await.unwrap();
    max_id.max(doomed).max(doomed_tc)
}

async fn assert_same_after_restart(extra_args: &[&str], compact_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), extra_args).await;
    let mut c = server.client().await;
    let max_id = write_varied_store(&mut c).await;
    if compact_first {
        c.compact_now(proto::CompactNowRequest {}).await.expect("CompactNow");
    }
    let before = dump_all(&mut c).await;
    let stats_before = stats(&mut c).await;
    assert_eq!(before.len(), 8);
    drop(c);
    server.stop().await;

    let server = TestServer::start(dir.path(), extra_args).await;
    let mut c = server.client().await;
    assert_eq!(dump_all(&mut c).await, before);
    let s = stats(&mut c).await;
    assert_eq!(
        (s.problems_in_index, s.test_cases, s.expected_outputs),
        (stats_before.problems_in_index, stats_before.test_cases, stats_before.expected_outputs)
    );
    let p = create(&mut c, "new", Columns::new()).await;
    assert!(p > max_id, "id {p} after a restart is not above the old ids (max {max_id})");
    let tc = add(&mut c, p, int(1)).await;
    assert!(tc > p);
    server.stop().await;
}

#[tokio::test]
async fn sigterm_exits_zero_and_a_restart_reads_everything_back() {
    assert_same_after_restart(&[], false).await;
}

#[tokio::test]
async fn restart_reads_everything_back_across_many_segments() {
    assert_same_after_restart(&["--segment-bytes", "1024"], false).await;
}

#[tokio::test]
async fn sigterm_under_sync_none_flushes_before_exiting() {
    assert_same_after_restart(&["--sync", "none"], false).await;
}

#[tokio::test]
async fn restart_after_compaction_reads_everything_back() {
    assert_same_after_restart(&["--segment-bytes", "1024"], true).await;
}

#[tokio::test]
async fn sigterm_with_idle_clients_connected_still_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = server.client().await;
        create(&mut c, "x", Columns::new()).await;
        clients.push(c);
    }
    let started = Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown took {:?}", started.elapsed());
    drop(clients);
}

// ----- SIGKILL ----------------------------------------------------------------

/// One write a writer sent; if it was not acknowledged, the server may or
/// may not have applied it.
#[derive(Clone, Debug)]
enum Op {
    Create,
    Add { problem: u64 },
    SetOutput { problem: u64, test_case: u64, value: Canon },
    UpdateHtml { problem: u64, html: String },
    UpdateTestCase { problem: u64, test_case: u64, value: Canon },
    Delete { problem: u64 },
}

/// What one writer was acknowledged, and the one write it had in flight.
#[derive(Debug, Default)]
struct Acked {
    html: BTreeMap<u64, String>,
    columns: BTreeMap<u64, Columns>,
    /// Per problem, its test cases in chain order.
    chains: BTreeMap<u64, Vec<u64>>,
    values: BTreeMap<u64, Canon>,
    outputs: BTreeMap<u64, Canon>,
    deleted: BTreeSet<u64>,
    acks: usize,
    compactions: usize,
    pending: Option<Op>,
}

/// Writes as fast as it can until a request fails (the server was killed).
async fn writer(mut c: Client, w: i64, compact: bool) -> Acked {
    let mut acked = Acked::default();
    let mut i: i64 = 0;
    macro_rules! send {
        ($op:expr, $call:expr) => {{
            acked.pending = Some($op);
            match $call.await {
                Ok(response) => {
                    acked.pending = None;
                    acked.acks += 1;
                    response.into_inner()
                }
                Err(_) => return acked,
            }
        }};
    }
    loop {
        i += 1;
        let html = format!("<p>writer {w} problem {i}</p>");
        let cols = columns(&[("writer", &w.to_string()), ("i", &i.to_string())]);
        let request = proto::CreateProblemRequest { html: html.clone(), columns: cols.clone() };
        let p = send!(Op::Create, c.create_problem(request)).problem_id;
        acked.html.insert(p, html);
        acked.columns.insert(p, cols);
        acked.chains.insert(p, Vec::new());

        for j in 0..3 {
            let value = int_list(vec![w, i, j]);
            let request = proto::AddTestCaseRequest { problem_id: p, value: Some(value.clone()), ..Default::default() };
            let tc = send!(Op::Add { problem: p }, c.add_test_case(request)).test_case_id;
            acked.chains.get_mut(&p).unwrap().push(tc);
            acked.values.insert(tc, canon(&value));

            let out = string(&format!("out {w} {i} {j}"));
            let request = proto::SetExpectedOutputRequest {
                problem_id: p,
                test_case_id: tc,
                value: Some(out.clone()),
                ..Default::default()
            };
            let op = Op::SetOutput { problem: p, test_case: tc, value: canon(&out) };
            send!(op, c.set_expected_output(request));
            acked.outputs.insert(tc, canon(&out));

            if j == 1 {
                let value = double(i as f64 + 0.5);
                let request = proto::UpdateTestCaseRequest {
                    problem_id: p,
                    test_case_id: tc,
                    value: Some(value.clone()),
                    ..Default::default()
                };
                let op = Op::UpdateTestCase { problem: p, test_case: tc, value: canon(&value) };
                send!(op, c.update_test_case(request));
                acked.values.insert(tc, canon(&value));
            }
        }

        let html = format!("<p>writer {w} problem {i} v2</p>");
        let request = proto::UpdateProblemHtmlRequest { problem_id: p, html: html.clone(), ..Default::default() };
        send!(Op::UpdateHtml { problem: p, html: html.clone() }, c.update_problem_html(request));
        acked.html.insert(p, html);

        if i % 4 == 0 {
            send!(
                Op::Delete { problem: p },
                c.delete_problem(proto::ProblemRef { problem_id: p, ..Default::default() })
            );
            acked.deleted.insert(p);
        }
        if compact && i % 2 == 0 {
            // Not a write of its own: whatever it does must keep the rest.
            if c.compact_now(proto::CompactNowRequest {}).await.is_err() {
                return acked;
            }
            acked.compactions += 1;
        }
    }
}

/// Checks, after a restart, that every acknowledged write of `acked` is
/// present with its value; the one write in flight may or may not be.
async fn check_acked(c: &mut Client, acked: &Acked, live: &BTreeSet<u64>) {
    let pending = acked.pending.clone();
    for (&p, want_html) in &acked.html {
        if acked.deleted.contains(&p) {
            assert!(!live.contains(&p), "deleted problem {p} is back");
            continue;
        }
        if matches!(pending, Some(Op::Delete { problem }) if problem == p) && !live.contains(&p) {
            continue;
        }
        assert!(live.contains(&p), "acknowledged problem {p} is lost");
        let got = html(c, p).await;
        let in_flight = matches!(&pending, Some(Op::UpdateHtml { problem, html }) if *problem == p && *html == got);
        assert!(got == *want_html || in_flight, "problem {p}: html {got:?}, acknowledged {want_html:?}");
        assert_eq!(meta(c, p).await, acked.columns[&p], "problem {p}: columns");

        let chain: Vec<(u64, Canon)> = all_test_cases(c, p).await;
        let ids: Vec<u64> = chain.iter().map(|(id, _)| *id).collect();
        let want_ids = &acked.chains[&p];
        let extra_allowed = matches!(pending, Some(Op::Add { problem }) if problem == p);
        let ok = ids == *want_ids || (extra_allowed && ids.len() == want_ids.len() + 1 && ids.starts_with(want_ids));
        assert!(ok, "problem {p}: chain {ids:?}, acknowledged {want_ids:?}");
        for (tc, got) in chain.iter().filter(|(tc, _)| want_ids.contains(tc)) {
            let want = &acked.values[tc];
            let in_flight = matches!(&pending, Some(Op::UpdateTestCase { problem, test_case, value })
                if *problem == p && test_case == tc && value == got);
            assert!(got == want || in_flight, "test case {tc}: {got:?}, acknowledged {want:?}");
            let got_out = output(c, p, *tc).await;
            match acked.outputs.get(tc) {
                Some(want) => assert_eq!(got_out.as_ref(), Some(want), "output of test case {tc}"),
                None => {
                    let in_flight = matches!(&pending, Some(Op::SetOutput { problem, test_case, value })
                        if *problem == p && test_case == tc && Some(value) == got_out.as_ref());
                    assert!(got_out.is_none() || in_flight, "test case {tc}: unacknowledged output {got_out:?}");
                }
            }
        }
    }
}

async fn sigkill_keeps_every_acknowledged_write(extra_args: &[&str], writers_count: i64, compact: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), extra_args).await;
    let mut writers = JoinSet::new();
    for w in 0..writers_count {
        let c = server.client().await;
        writers.spawn(writer(c, w, compact));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill9().await;
    let mut all = Vec::new();
    while let Some(acked) = writers.join_next().await {
        all.push(acked.expect("writer task"));
    }
    let acks: usize = all.iter().map(|a| a.acks).sum();
    assert!(acks >= 20, "only {acks} writes were acknowledged in 0.5 s: the test proves little");
    let compactions: usize = all.iter().map(|a| a.compactions).sum();
    assert!(!compact || compactions > 0, "no compaction completed before the kill");

    let server = TestServer::start(dir.path(), extra_args).await;
    let mut c = server.client().await;
    let live: BTreeSet<u64> = list_all(&mut c, 0).await.into_iter().collect();
    for acked in &all {
        check_acked(&mut c, acked, &live).await;
    }
    // Nothing appeared that nobody wrote: at most one unacknowledged create
    // per writer.
    let known: BTreeSet<u64> = all.iter().flat_map(|a| a.html.keys().copied()).collect();
    let unknown = live.difference(&known).count();
    let in_flight_creates = all.iter().filter(|a| matches!(a.pending, Some(Op::Create))).count();
    assert!(unknown <= in_flight_creates, "{unknown} unknown problems, {in_flight_creates} creates in flight");

    // Ids keep growing after the crash.
    let max_id = all
        .iter()
        .flat_map(|a| a.html.keys().chain(a.values.keys()))
        .copied()
        .chain(live.iter().copied())
        .max()
        .unwrap_or(0);
    let p = create(&mut c, "after the crash", Columns::new()).await;
    assert!(p > max_id, "new id {p} is not above {max_id}");
    eprintln!("{acks} acknowledged writes ({compactions} compactions) survived SIGKILL");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_sync_always_keeps_every_acknowledged_write() {
    sigkill_keeps_every_acknowledged_write(&[], 4, false).await;
}

/// Writers that alternate writes and compactions, so the kill may land in
/// the middle of a compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_and_during_compactions_keeps_every_acknowledged_write() {
    sigkill_keeps_every_acknowledged_write(&["--segment-bytes", "4096"], 3, true).await;
}

/// `lse_server --upgrade` rewrites a format-2 data directory and exits;
/// on a current one it changes nothing. Either way the server then serves
/// the directory.
#[tokio::test]
async fn upgrade_rewrites_a_format_2_directory_and_exits() {
    use stratum_core::{RecordKind, SEGMENT_HEADER_LEN, Salt, Scan, SegmentHeader, scan, seal_record};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let mut c = server.client().await;
    let problem = create(&mut c, "<p>kept</p>", columns(&[("name", "p")])).await;
    server.stop().await;

    // Rewrite active.seg as the previous version wrote it: the format-2
    // header (magic, version 2, reserved, id, CRC-32 of those 16 bytes)
    // and unsalted records, without durability marks.
    let active = dir.path().join("active.seg");
    let bytes = std::fs::read(&active).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    let mut v2 = b"STRATSEG".to_vec();
    v2.extend_from_slice(&2u16.to_le_bytes());
    v2.extend_from_slice(&[0, 0]);
    v2.extend_from_slice(&header.segment.get().to_le_bytes());
    let crc = crc32fast::hash(&v2);
    v2.extend_from_slice(&crc.to_le_bytes());
    let mut at = SEGMENT_HEADER_LEN;
    while at < bytes.len() {
        let Scan::Record(record) = scan(&bytes[at..], &header.salt) else { panic!("a bad record at {at}") };
        let len = record.len();
        if record.kind != RecordKind::Durable {
            let start = v2.len();
            v2.extend_from_slice(&bytes[at..at + len]);
            seal_record(&mut v2[start..], &Salt::UNSALTED);
        }
        at += len;
    }
    std::fs::write(&active, &v2).unwrap();
    let refused = TestServer::try_start(dir.path(), &[]).await.err().expect("a format-2 segment is refused");
    assert!(refused.stderr.contains("--upgrade"), "{}", refused.stderr);

    let dir_arg = dir.path().to_str().unwrap();
    let upgraded = run_to_exit(&["--upgrade", "--data-dir", dir_arg]).await;
    assert!(upgraded.status.success(), "{}{}", upgraded.stdout, upgraded.stderr);
    assert!(upgraded.stdout.contains("upgraded") && upgraded.stdout.contains("active.seg"), "{}", upgraded.stdout);
    let again = run_to_exit(&["--upgrade", "--data-dir", dir_arg]).await;
    assert!(again.status.success() && again.stdout.contains("0 segment files upgraded"), "{}", again.stdout);

    let server = TestServer::start(dir.path(), &[]).await;
    let mut c = server.client().await;
    let html = c.get_problem_html(proto::ProblemRef { problem_id: problem, ..Default::default() }).await.unwrap();
    assert_eq!(html.into_inner().html, "<p>kept</p>");
    server.stop().await;
}
