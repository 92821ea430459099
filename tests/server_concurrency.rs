//! Many clients at once, each on its own connection, each owning its
//! problems: every client checks its own writes immediately, and at the end
//! a fresh client checks the whole store against what every client was
//! acknowledged.

mod server_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use server_support::*;
use stratum::proto;
use tokio::task::JoinSet;

const CLIENTS: u64 = 32;
const RUN_FOR: Duration = Duration::from_secs(3);
/// How long past the end of the run a client may wait for an answer before
/// the server counts as hung.
const HANG: Duration = Duration::from_secs(10);

/// What a client expects one of its problems to hold.
#[derive(Clone, Debug, Default)]
struct Expected {
    html: String,
    columns: Columns,
    chain: Vec<u64>,
    values: BTreeMap<u64, Canon>,
    outputs: BTreeMap<u64, Canon>,
}

impl Expected {
    fn dump(&self) -> ProblemDump {
        let test_cases =
            self.chain.iter().map(|tc| (*tc, self.values[tc].clone(), self.outputs.get(tc).cloned())).collect();
        ProblemDump { html: self.html.clone(), columns: self.columns.clone(), test_cases }
    }
}

/// A small deterministic generator (xorshift), one per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn value(&mut self, k: u64, n: u64) -> proto::Value {
        let (k, n) = (k as i64, n as i64);
        match self.below(6) {
            0 => int(self.next() as i64),
            1 => double(f64::from_bits(self.next())),
            2 => string(&format!("client {k} op {n} ✓")),
            3 => int_list((0..self.below(20) as i64).map(|i| i * k - n).collect()),
            4 => string_list(&["", &format!("{k}"), &format!("{n}")]),
            _ => string_map(&[("client", &k.to_string()), ("op", &n.to_string())]),
        }
    }
}

/// One client's run: random writes to its own problems, each read back
/// right away. Returns what it was acknowledged.
async fn client_run(mut c: Client, k: u64, deadline: Instant) -> (BTreeMap<u64, Expected>, u64) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (k + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut mine: BTreeMap<u64, Expected> = BTreeMap::new();
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        n += 1;
        let ids: Vec<u64> = mine.keys().copied().collect();
        if ids.len() < 2 || rng.below(12) == 0 {
            let e = Expected {
                html: format!("<h1>client {k} problem {n}</h1>"),
                columns: columns(&[("client", &k.to_string()), ("created_at_op", &n.to_string())]),
                ..Expected::default()
            };
            let p = create(&mut c, &e.html, e.columns.clone()).await;
            assert!(!mine.contains_key(&p), "id {p} handed out twice");
            assert_eq!(dump_problem(&mut c, p).await, e.dump(), "client {k}: new problem {p}");
            mine.insert(p, e);
            continue;
        }
        let p = *rng.pick(&ids);
        let chain = mine[&p].chain.clone();
        let with_output: Vec<u64> = mine[&p].outputs.keys().copied().collect();
        match rng.below(11) {
            0..=2 => {
                let value = rng.value(k, n);
                let tc = add(&mut c, p, value.clone()).await;
                let e = mine.get_mut(&p).unwrap();
                e.chain.push(tc);
                e.values.insert(tc, canon(&value));
                assert_eq!(test_case(&mut c, p, tc).await, canon(&value), "client {k}: added {tc}");
            }
            3 | 4 if !chain.is_empty() => {
                let tc = *rng.pick(&chain);
                let value = rng.value(k, n);
                set_output(&mut c, p, tc, value.clone()).await;
                mine.get_mut(&p).unwrap().outputs.insert(tc, canon(&value));
                assert_eq!(output(&mut c, p, tc).await, Some(canon(&value)), "client {k}: output of {tc}");
            }
            5 if !chain.is_empty() => {
                let tc = *rng.pick(&chain);
                let value = rng.value(k, n);
                let request = proto::UpdateTestCaseRequest {
                    problem_id: p,
                    test_case_id: tc,
                    value: Some(value.clone()),
                    ..Default::default()
                };
                c.update_test_case(request).await.expect("UpdateTestCase");
                mine.get_mut(&p).unwrap().values.insert(tc, canon(&value));
                assert_eq!(test_case(&mut c, p, tc).await, canon(&value), "client {k}: updated {tc}");
            }
            6 if !with_output.is_empty() => {
                let tc = *rng.pick(&with_output);
                let value = rng.value(k, n);
                let request = proto::UpdateExpectedOutputRequest {
                    problem_id: p,
                    test_case_id: tc,
                    value: Some(value.clone()),
                    ..Default::default()
                };
                c.update_expected_output(request).await.expect("UpdateExpectedOutput");
                mine.get_mut(&p).unwrap().outputs.insert(tc, canon(&value));
                assert_eq!(output(&mut c, p, tc).await, Some(canon(&value)), "client {k}: updated output of {tc}");
            }
            7 => {
                let html_text = format!("<h1>client {k} problem {p} op {n}</h1>");
                let request =
                    proto::UpdateProblemHtmlRequest { problem_id: p, html: html_text.clone(), ..Default::default() };
                c.update_problem_html(request).await.expect("UpdateProblemHtml");
                mine.get_mut(&p).unwrap().html = html_text.clone();
                assert_eq!(html(&mut c, p).await, html_text, "client {k}: html of {p}");
            }
            8 => {
                let name = format!("c{}", rng.below(4));
                let request = proto::UpdateProblemColumnRequest {
                    problem_id: p,
                    name: name.clone(),
                    value: n.to_string(),
                    ..Default::default()
                };
                c.update_problem_column(request).await.expect("UpdateProblemColumn");
                mine.get_mut(&p).unwrap().columns.insert(name, n.to_string());
                assert_eq!(meta(&mut c, p).await, mine[&p].columns, "client {k}: columns of {p}");
            }
            9 if chain.len() > 2 => {
                let tc = *rng.pick(&chain);
                c.delete_test_case(proto::TestCaseRef { problem_id: p, test_case_id: tc, ..Default::default() })
                    .await
                    .expect("DeleteTestCase");
                let e = mine.get_mut(&p).unwrap();
                e.chain.retain(|&t| t != tc);
                e.values.remove(&tc);
                e.outputs.remove(&tc);
                let ids: Vec<u64> = all_test_cases(&mut c, p).await.into_iter().map(|(id, _)| id).collect();
                assert_eq!(ids, mine[&p].chain, "client {k}: chain of {p} after deleting {tc}");
            }
            9 if !with_output.is_empty() => {
                let tc = *rng.pick(&with_output);
                let request = proto::TestCaseRef { problem_id: p, test_case_id: tc, ..Default::default() };
                c.delete_expected_output(request).await.expect("DeleteExpectedOutput");
                mine.get_mut(&p).unwrap().outputs.remove(&tc);
                assert_eq!(output(&mut c, p, tc).await, None, "client {k}: deleted output of {tc}");
            }
            10 if ids.len() > 3 => {
                c.delete_problem(proto::ProblemRef { problem_id: p, ..Default::default() })
                    .await
                    .expect("DeleteProblem");
                mine.remove(&p);
                let status =
                    c.get_problem_html(proto::ProblemRef { problem_id: p, ..Default::default() }).await.unwrap_err();
                assert_eq!(status.code(), tonic::Code::NotFound, "client {k}: deleted problem {p}");
            }
            _ => {
                // A full read of one problem and a listing.
                assert_eq!(dump_problem(&mut c, p).await, mine[&p].dump(), "client {k}: problem {p}");
                let listed = list_all(&mut c, 50).await;
                for id in mine.keys() {
                    assert!(listed.binary_search(id).is_ok(), "client {k}: problem {id} missing from the listing");
                }
            }
        }
    }
    (mine, n)
}

async fn many_clients(extra_args: &[&str], compactor: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), extra_args).await;
    let deadline = Instant::now() + RUN_FOR;
    let mut clients = JoinSet::new();
    for k in 0..CLIENTS {
        let c = server.client().await;
        clients.spawn(async move {
            match tokio::time::timeout(RUN_FOR + HANG, client_run(c, k, deadline)).await {
                Ok(done) => done,
                Err(_) => panic!("client {k}: the server stopped answering (hung for {HANG:?})"),
            }
        });
    }
    let compactor_client = server.client().await;
    let compactions = compactor.then(|| {
        let mut c = compactor_client.clone();
        tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let compacted = tokio::time::timeout(HANG, c.compact_now(proto::CompactNowRequest {})).await;
                let compacted = compacted.unwrap_or_else(|_| panic!("CompactNow hung for {HANG:?}"));
                compacted.expect("CompactNow during the load");
                done += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            done
        })
    });

    let mut expected: BTreeMap<u64, ProblemDump> = BTreeMap::new();
    let mut ops = 0;
    while let Some(joined) = clients.join_next().await {
        let (mine, n) = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        ops += n;
        for (p, e) in mine {
            assert!(expected.insert(p, e.dump()).is_none(), "problem {p} owned by two clients");
        }
    }
    if let Some(compactions) = compactions {
        let done = compactions.await.unwrap();
        assert!(done > 0);
        eprintln!("{done} compactions ran during the load");
    }
    assert!(ops >= CLIENTS * 10, "only {ops} operations in {RUN_FOR:?}");
    eprintln!("{ops} operations by {CLIENTS} clients");

    let mut fresh = server.client().await;
    assert_eq!(dump_all(&mut fresh).await, expected);
    let s = stats(&mut fresh).await;
    let test_cases: usize = expected.values().map(|d| d.test_cases.len()).sum();
    let outputs: usize = expected.values().map(|d| d.test_cases.iter().filter(|t| t.2.is_some()).count()).sum();
    assert_eq!(s.problems_in_index, expected.len() as u64);
    assert_eq!(s.test_cases, test_cases as u64);
    assert_eq!(s.expected_outputs, outputs as u64);
    assert_eq!(s.write_error, "");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_clients_read_their_own_writes_and_the_final_state_matches() {
    many_clients(&[], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_clients_with_compactions_running_keep_every_write() {
    many_clients(&["--segment-bytes", "65536"], true).await;
}

/// One client writing as fast as it can while another compacts in a loop,
/// each request with a deadline (an earlier compaction deadlocked against
/// concurrent writers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compact_now_alongside_one_writer_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--segment-bytes", "65536"]).await;
    let mut writer = server.client().await;
    let mut compactor = server.client().await;
    let mut problems = Vec::new();
    for i in 0..200 {
        problems.push(create(&mut writer, &format!("problem {i}"), columns(&[("i", &i.to_string())])).await);
    }
    let deadline = Instant::now() + RUN_FOR;
    let compacting = tokio::spawn(async move {
        let mut done = 0;
        while Instant::now() < deadline {
            let compacted = tokio::time::timeout(HANG, compactor.compact_now(proto::CompactNowRequest {})).await;
            compacted.unwrap_or_else(|_| panic!("CompactNow hung for {HANG:?} after {done} compactions")).unwrap();
            done += 1;
        }
        done
    });
    let mut writes = 0;
    while Instant::now() < deadline {
        let p = problems[writes % problems.len()];
        let request =
            proto::UpdateProblemHtmlRequest { problem_id: p, html: format!("v{writes}"), ..Default::default() };
        let written = tokio::time::timeout(HANG, writer.update_problem_html(request)).await;
        written.unwrap_or_else(|_| panic!("a write hung for {HANG:?} after {writes} writes")).unwrap();
        writes += 1;
    }
    let compactions = compacting.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    eprintln!("{writes} writes, {compactions} compactions");
    for (i, &p) in problems.iter().enumerate() {
        assert_eq!(meta(&mut writer, p).await, columns(&[("i", &i.to_string())]));
    }
}
