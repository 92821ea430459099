//! The happy path of every RPC of `lse.Lse`, plus the health and reflection
//! services, against the real `lse_server` binary.

mod server_support;

use std::collections::BTreeMap;

use server_support::*;
use stratum::proto;
use tempfile::TempDir;
use tonic::Code;

async fn server(extra_args: &[&str]) -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), extra_args).await;
    (dir, server)
}

// ----- problems ---------------------------------------------------------------

#[tokio::test]
async fn create_problem_with_columns_reads_back_html_and_meta() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let cols = columns(&[("name", "Two Sum"), ("difficulty", "easy"), ("tags", "array,hash"), ("ünï", "cödé ✓")]);
    let html_text = "<h1>Two Sum</h1><p>Find two numbers ✓ 数字</p>";
    let id = create(&mut c, html_text, cols.clone()).await;
    assert!(id >= 1);
    assert_eq!(html(&mut c, id).await, html_text);
    assert_eq!(meta(&mut c, id).await, cols);
}

#[tokio::test]
async fn create_problem_without_columns_and_with_empty_html() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let id = create(&mut c, "", Columns::new()).await;
    assert_eq!(html(&mut c, id).await, "");
    assert_eq!(meta(&mut c, id).await, Columns::new());
    assert_eq!(all_test_cases(&mut c, id).await, vec![]);
}

#[tokio::test]
async fn problem_ids_increase_and_are_shared_with_test_cases() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let p1 = create(&mut c, "a", Columns::new()).await;
    let t1 = add(&mut c, p1, int(1)).await;
    let p2 = create(&mut c, "b", Columns::new()).await;
    let t2 = add(&mut c, p2, int(2)).await;
    assert_eq!(p1, 1, "ids start at 1");
    assert!(p1 < t1 && t1 < p2 && p2 < t2, "one increasing counter: {p1} {t1} {p2} {t2}");
}

#[tokio::test]
async fn update_problem_html_replaces_the_blob_only() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let cols = columns(&[("name", "x")]);
    let id = create(&mut c, "old html", cols.clone()).await;
    let other = create(&mut c, "other", Columns::new()).await;
    let tc = add(&mut c, id, string("in")).await;
    c.update_problem_html(proto::UpdateProblemHtmlRequest {
        problem_id: id,
        html: "<b>new</b> html".into(),
        ..Default::default()
    })
    .await
    .expect("UpdateProblemHtml");
    assert_eq!(html(&mut c, id).await, "<b>new</b> html");
    assert_eq!(meta(&mut c, id).await, cols, "columns are untouched");
    assert_eq!(all_test_cases(&mut c, id).await, vec![(tc, Canon::Str("in".into()))]);
    assert_eq!(html(&mut c, other).await, "other");
}

#[tokio::test]
async fn update_problem_column_adds_and_replaces_columns() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let id = create(&mut c, "doc", columns(&[("name", "first"), ("keep", "me")])).await;
    let update = |name: &str, value: &str| proto::UpdateProblemColumnRequest {
        problem_id: id,
        name: name.to_string(),
        value: value.to_string(),
        ..Default::default()
    };
    c.update_problem_column(update("name", "second")).await.expect("replace");
    c.update_problem_column(update("added", "")).await.expect("add with an empty value");
    c.update_problem_column(update("ключ", "значение")).await.expect("add unicode");
    assert_eq!(
        meta(&mut c, id).await,
        columns(&[("name", "second"), ("keep", "me"), ("added", ""), ("ключ", "значение")])
    );
    assert_eq!(html(&mut c, id).await, "doc", "the blob is untouched");
}

#[tokio::test]
async fn delete_problem_removes_it_and_its_test_cases() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let keep = create(&mut c, "keep", columns(&[("k", "v")])).await;
    let gone = create(&mut c, "gone", columns(&[("k", "v")])).await;
    let tc = add(&mut c, gone, int(5)).await;
    set_output(&mut c, gone, tc, int(6)).await;
    let keep_before = dump_problem(&mut c, keep).await;

    c.delete_problem(proto::ProblemRef { problem_id: gone, ..Default::default() }).await.expect("DeleteProblem");

    let r = proto::ProblemRef { problem_id: gone, ..Default::default() };
    assert_status(c.get_problem_html(r).await, Code::NotFound, &[]);
    assert_status(c.get_problem_meta(r).await, Code::NotFound, &[]);
    assert_status(c.get_all_test_cases(whole_chain(r)).await, Code::NotFound, &[]);
    let t = proto::TestCaseRef { problem_id: gone, test_case_id: tc, ..Default::default() };
    assert_status(c.get_test_case(t).await, Code::NotFound, &[]);
    assert_status(c.get_expected_output(t).await, Code::NotFound, &[]);
    assert_eq!(list_all(&mut c, 0).await, vec![keep]);
    let s = stats(&mut c).await;
    assert_eq!((s.problems_in_index, s.test_cases, s.expected_outputs), (1, 0, 0));
    assert_eq!(dump_problem(&mut c, keep).await, keep_before);
}

#[tokio::test]
async fn list_problems_pages_chain_over_all_ids_in_ascending_order() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let id = create(&mut c, &format!("p{i}"), Columns::new()).await;
        // Test cases take ids too, so problem ids are not contiguous.
        if i % 3 == 0 {
            add(&mut c, id, int(i)).await;
        }
        ids.push(id);
    }

    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = proto::ListProblemsRequest { page_size: 10, page_token: page_token.clone() };
        let page = c.list_problems(request).await.expect("ListProblems").into_inner();
        let next = page.next_page_token.clone();
        pages.push(page);
        if next.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "page tokens do not end");
        page_token = next;
    }
    let sizes: Vec<usize> = pages.iter().map(|p| p.problem_ids.len()).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    assert!(!pages[0].next_page_token.is_empty() && !pages[1].next_page_token.is_empty());
    assert_eq!(pages[2].next_page_token, "", "the last page has no next token");
    let union: Vec<u64> = pages.iter().flat_map(|p| p.problem_ids.iter().copied()).collect();
    assert_eq!(union, ids, "all ids, ascending, each once");
}

#[tokio::test]
async fn list_problems_exact_multiple_of_page_size_ends_without_an_empty_page() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(create(&mut c, &format!("p{i}"), Columns::new()).await);
    }
    let first = c.list_problems(proto::ListProblemsRequest { page_size: 10, page_token: String::new() }).await;
    let first = first.unwrap().into_inner();
    assert_eq!(first.problem_ids, ids[..10]);
    let second = c.list_problems(proto::ListProblemsRequest { page_size: 10, page_token: first.next_page_token }).await;
    let second = second.unwrap().into_inner();
    assert_eq!(second.problem_ids, ids[10..]);
    assert_eq!(second.next_page_token, "");
}

#[tokio::test]
async fn list_problems_default_page_size_returns_everything_and_skips_deleted() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(create(&mut c, &format!("p{i}"), Columns::new()).await);
    }
    c.delete_problem(proto::ProblemRef { problem_id: ids[4], ..Default::default() }).await.unwrap();
    ids.remove(4);
    let page = c.list_problems(proto::ListProblemsRequest::default()).await.unwrap().into_inner();
    assert_eq!(page.problem_ids, ids);
    assert_eq!(page.next_page_token, "");
}

#[tokio::test]
async fn list_problems_on_an_empty_store_is_one_empty_page() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let page = c.list_problems(proto::ListProblemsRequest { page_size: 10, page_token: String::new() }).await;
    let page = page.unwrap().into_inner();
    assert_eq!(page.problem_ids, Vec::<u64>::new());
    assert_eq!(page.next_page_token, "");
}

// ----- test cases: every value kind -------------------------------------------

/// Stores each value as a test case and as its expected output, and checks
/// that GetTestCase, GetAllTestCases and GetExpectedOutput return the same
/// bits.
async fn round_trip(values: Vec<proto::Value>) {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let p = create(&mut c, "values", Columns::new()).await;
    let mut expected = Vec::new();
    for v in &values {
        let tc = add(&mut c, p, v.clone()).await;
        set_output(&mut c, p, tc, v.clone()).await;
        expected.push((tc, canon(v)));
    }
    for (tc, want) in &expected {
        assert_eq!(&test_case(&mut c, p, *tc).await, want);
        assert_eq!(output(&mut c, p, *tc).await.as_ref(), Some(want));
    }
    assert_eq!(all_test_cases(&mut c, p).await, expected);
}

#[tokio::test]
async fn add_test_case_round_trips_int64_including_extremes() {
    round_trip(vec![int(0), int(1), int(-1), int(i64::MIN), int(i64::MAX), int(i64::MIN + 1), int(1 << 40)]).await;
}

#[tokio::test]
async fn add_test_case_round_trips_doubles_by_bits_including_nan_and_negative_zero() {
    let weird_nan = f64::from_bits(0x7ff8_dead_beef_0001);
    round_trip(vec![
        double(0.0),
        double(-0.0),
        double(f64::NAN),
        double(weird_nan),
        double(f64::INFINITY),
        double(f64::NEG_INFINITY),
        double(f64::MIN_POSITIVE),
        double(5e-324),
        double(f64::MAX),
        double(-1.5),
    ])
    .await;
    // The comparison really is by bits.
    assert_ne!(canon(&double(0.0)), canon(&double(-0.0)));
    assert_eq!(canon(&double(f64::NAN)), canon(&double(f64::NAN)));
}

#[tokio::test]
async fn add_test_case_round_trips_strings_including_empty_and_unicode() {
    round_trip(vec![
        string(""),
        string("hello"),
        string("ünïcødé ✓ 数字 🦀 \u{0}\u{10FFFF}"),
        string(&"long ".repeat(20_000)),
        string("line\nbreak\ttab \"quotes\""),
    ])
    .await;
}

#[tokio::test]
async fn add_test_case_round_trips_int_lists_including_empty() {
    round_trip(vec![
        int_list(vec![]),
        int_list(vec![0]),
        int_list(vec![i64::MIN, -1, 0, 1, i64::MAX]),
        int_list((0..1000).map(|i| i * 7919 - 3_000_000).collect()),
    ])
    .await;
}

#[tokio::test]
async fn add_test_case_round_trips_string_lists() {
    round_trip(vec![
        string_list(&[]),
        string_list(&[""]),
        string_list(&["a", "", "ünï", "🦀", "a"]),
        string_list(&["z", "y", "x"]),
    ])
    .await;
}

#[tokio::test]
async fn add_test_case_round_trips_string_maps() {
    round_trip(vec![
        string_map(&[]),
        string_map(&[("", "empty key")]),
        string_map(&[("k", "")]),
        string_map(&[("zeta", "1"), ("alpha", "2"), ("ключ", "значение"), ("🦀", "crab")]),
    ])
    .await;
}

#[tokio::test]
async fn add_test_case_round_trips_raw_bytes() {
    let every_byte: Vec<u8> = (0..=255).collect();
    let bytes = |b: &[u8]| proto::Value { kind: Some(proto::value::Kind::BytesValue(b.to_vec())) };
    round_trip(vec![bytes(&[]), bytes(&every_byte), bytes(b"\xff\xfe not UTF-8 \x00"), bytes(&[0; 70_000])]).await;
}

#[tokio::test]
async fn string_map_entries_come_back_in_key_order() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let p = create(&mut c, "map", Columns::new()).await;
    let tc = add(&mut c, p, string_map(&[("c", "3"), ("a", "1"), ("b", "2")])).await;
    let Canon::Map(entries) = test_case(&mut c, p, tc).await else { panic!("not a map") };
    let keys: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(keys, ["a", "b", "c"]);
}

// ----- test cases: chain operations -------------------------------------------

#[tokio::test]
async fn get_all_test_cases_keeps_chain_order_after_deleting_a_middle_one() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let p = create(&mut c, "chain", Columns::new()).await;
    let other = create(&mut c, "other", Columns::new()).await;
    let mut chain = Vec::new();
    for i in 0..5 {
        chain.push((add(&mut c, p, int(i * 10)).await, Canon::Int(i * 10)));
        add(&mut c, other, int(-i)).await;
    }
    let middle = chain.remove(2).0;
    c.delete_test_case(proto::TestCaseRef { problem_id: p, test_case_id: middle, ..Default::default() })
        .await
        .expect("DeleteTestCase");
    assert_eq!(all_test_cases(&mut c, p).await, chain);

    // New test cases go to the end of the chain.
    let last = add(&mut c, p, string("last")).await;
    chain.push((last, Canon::Str("last".into())));
    assert_eq!(all_test_cases(&mut c, p).await, chain);
    assert_eq!(all_test_cases(&mut c, other).await.len(), 5);
}

#[tokio::test]
async fn update_test_case_replaces_value_and_keeps_position_and_output() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let p = create(&mut c, "upd", Columns::new()).await;
    let a = add(&mut c, p, int(1)).await;
    let b = add(&mut c, p, int(2)).await;
    let d = add(&mut c, p, int(3)).await;
    set_output(&mut c, p, b, string("out-b")).await;
    c.update_test_case(proto::UpdateTestCaseRequest {
        problem_id: p,
        test_case_id: b,
        value: Some(string_list(&["new"])),
        ..Default::default()
    })
    .await
    .expect("UpdateTestCase");
    assert_eq!(test_case(&mut c, p, b).await, Canon::StrList(vec!["new".into()]), "the kind may change");
    assert_eq!(
        all_test_cases(&mut c, p).await,
        vec![(a, Canon::Int(1)), (b, Canon::StrList(vec!["new".into()])), (d, Canon::Int(3))]
    );
    assert_eq!(output(&mut c, p, b).await, Some(Canon::Str("out-b".into())), "the output stays");
}

#[tokio::test]
async fn delete_test_case_removes_it_and_its_expected_output() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let p = create(&mut c, "del", Columns::new()).await;
    let keep = add(&mut c, p, int(1)).await;
    let gone = add(&mut c, p, int(2)).await;
    set_output(&mut c, p, keep, int(10)).await;
    set_output(&mut c, p, gone, int(20)).await;
    assert_eq!(stats(&mut c).await.expected_outputs, 2);

    let r = proto::TestCaseRef { problem_id: p, test_case_id: gone, ..Default::default() };
    c.delete_test_case(r).await.expect("DeleteTestCase");
    assert_status(c.get_test_case(r).await, Code::NotFound, &[]);
    assert_status(c.get_expected_output(r).await, Code::NotFound, &[]);
    assert_eq!(all_test_cases(&mut c, p).await, vec![(keep, Canon::Int(1))]);
    assert_eq!(output(&mut c, p, keep).await, Some(Canon::Int(10)));
    let s = stats(&mut c).await;
    assert_eq!((s.test_cases, s.expected_outputs), (1, 1));
}

// ----- expected outputs -------------------------------------------------------

#[tokio::test]
async fn set_expected_output_sets_and_then_replaces() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let p = create(&mut c, "out", Columns::new()).await;
    let tc = add(&mut c, p, int_list(vec![2, 7, 11, 15])).await;
    let other = add(&mut c, p, int(0)).await;
    assert_eq!(output(&mut c, p, tc).await, None);
    set_output(&mut c, p, tc, int_list(vec![0, 1])).await;
    let response = c
        .get_expected_output(proto::TestCaseRef { problem_id: p, test_case_id: tc, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.test_case_id, tc);
    assert_eq!(canon_field(&response.value), Canon::IntList(vec![0, 1]));
    set_output(&mut c, p, tc, double(0.5)).await;
    assert_eq!(output(&mut c, p, tc).await, Some(Canon::DoubleBits(0.5f64.to_bits())));
    assert_eq!(output(&mut c, p, other).await, None, "other test cases have no output");
    assert_eq!(stats(&mut c).await.expected_outputs, 1);
}

#[tokio::test]
async fn update_expected_output_replaces_an_existing_output() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let p = create(&mut c, "out", Columns::new()).await;
    let tc = add(&mut c, p, int(1)).await;
    set_output(&mut c, p, tc, string("before")).await;
    c.update_expected_output(proto::UpdateExpectedOutputRequest {
        problem_id: p,
        test_case_id: tc,
        value: Some(string("after")),
        ..Default::default()
    })
    .await
    .expect("UpdateExpectedOutput");
    assert_eq!(output(&mut c, p, tc).await, Some(Canon::Str("after".into())));
    assert_eq!(test_case(&mut c, p, tc).await, Canon::Int(1), "the input is untouched");
}

#[tokio::test]
async fn delete_expected_output_removes_only_the_output() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let p = create(&mut c, "out", Columns::new()).await;
    let tc = add(&mut c, p, int(1)).await;
    set_output(&mut c, p, tc, int(2)).await;
    c.delete_expected_output(proto::TestCaseRef { problem_id: p, test_case_id: tc, ..Default::default() })
        .await
        .expect("DeleteExpectedOutput");
    assert_eq!(output(&mut c, p, tc).await, None);
    assert_eq!(all_test_cases(&mut c, p).await, vec![(tc, Canon::Int(1))]);
    assert_eq!(stats(&mut c).await.expected_outputs, 0);
    // It can be set again.
    set_output(&mut c, p, tc, int(3)).await;
    assert_eq!(output(&mut c, p, tc).await, Some(Canon::Int(3)));
}

// ----- administration ---------------------------------------------------------

#[tokio::test]
async fn get_stats_on_a_fresh_store() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let s = stats(&mut c).await;
    assert_eq!((s.problems_in_index, s.test_cases, s.expected_outputs, s.records), (0, 0, 0, 0));
    assert!(s.segment_count >= 1);
    assert!(s.active_segment_bytes > 0, "the segment header counts");
    assert_eq!(s.sync_policy, "always");
    assert_eq!(s.write_error, "");
    assert_eq!(s.compactions, 0);
}

#[tokio::test]
async fn get_stats_counts_problems_test_cases_outputs_and_bytes() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let empty = stats(&mut c).await;
    let p1 = create(&mut c, "one", columns(&[("a", "b")])).await;
    let p2 = create(&mut c, "two", Columns::new()).await;
    let t1 = add(&mut c, p1, int(1)).await;
    add(&mut c, p1, int(2)).await;
    add(&mut c, p2, int(3)).await;
    set_output(&mut c, p1, t1, int(4)).await;
    let s = stats(&mut c).await;
    assert_eq!(s.problems_in_index, 2);
    assert_eq!(s.test_cases, 3);
    assert_eq!(s.expected_outputs, 1);
    // Six writes, the id reservation made before the first id, and the
    // durability marks appended after fsyncs: the only garbage so far.
    let mark_len = (stratum_core::RECORD_HEADER_LEN + stratum_core::SALT_LEN + 8) as u64;
    let marks = s.garbage_bytes / mark_len;
    assert_eq!(s.garbage_bytes % mark_len, 0, "garbage that is not durability marks: nothing was replaced yet");
    assert!((1..=6).contains(&marks), "{marks} durability marks for six synced writes");
    assert_eq!(s.records, 7 + marks);
    assert!(s.segment_count >= 1);
    assert!(s.active_segment_bytes > empty.active_segment_bytes);
    assert_eq!(s.sync_policy, "always");
    assert_eq!(s.total_bytes, s.live_bytes + s.garbage_bytes);
    assert!(s.fsyncs > empty.fsyncs, "writes under `always` are fsynced");

    // Replacing a blob twice turns the first replacement into garbage (the
    // creating record still holds the columns).
    for text in ["TWO", "2"] {
        c.update_problem_html(proto::UpdateProblemHtmlRequest {
            problem_id: p2,
            html: text.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let after = stats(&mut c).await;
    let new_marks = (after.records - s.records).checked_sub(2).expect("two records written");
    assert!(new_marks <= 2, "{new_marks} durability marks for two synced writes");
    assert!(after.garbage_bytes > s.garbage_bytes + new_marks * mark_len, "{after:?}");
    assert_eq!(after.total_bytes, after.live_bytes + after.garbage_bytes);
}

#[tokio::test]
async fn get_stats_reports_the_sync_policy_it_was_started_with() {
    let (_dir, server) = server(&["--sync", "interval:250"]).await;
    let mut c = server.client().await;
    assert_eq!(stats(&mut c).await.sync_policy, "interval:250");
}

#[tokio::test]
async fn get_stats_segment_count_grows_as_segments_rotate() {
    let (_dir, server) = server(&["--segment-bytes", "4096"]).await;
    let mut c = server.client().await;
    let p = create(&mut c, "rotate", Columns::new()).await;
    for i in 0..20 {
        add(&mut c, p, string(&format!("{i:>1000}"))).await;
    }
    let s = stats(&mut c).await;
    assert!(s.segment_count >= 4, "20 KB in 4 KB segments: {s:?}");
    assert!(s.active_segment_bytes <= 4096);
    assert_eq!(all_test_cases(&mut c, p).await.len(), 20);
}

#[tokio::test]
async fn flush_makes_writes_durable_under_sync_none() {
    let (_dir, server) = server(&["--sync", "none"]).await;
    let mut c = server.client().await;
    create(&mut c, "unsynced", Columns::new()).await;
    let before = stats(&mut c).await;
    assert_eq!(before.sync_policy, "none");
    c.flush(proto::FlushRequest {}).await.expect("Flush");
    let after = stats(&mut c).await;
    assert!(after.fsyncs > before.fsyncs, "Flush fsyncs pending writes: {} -> {}", before.fsyncs, after.fsyncs);
}

#[tokio::test]
async fn flush_with_nothing_pending_succeeds() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    c.flush(proto::FlushRequest {}).await.expect("Flush on an empty store");
    create(&mut c, "x", Columns::new()).await;
    c.flush(proto::FlushRequest {}).await.expect("Flush after an acknowledged write");
}

/// Writes a store whose sealed segments hold garbage: replaced blobs,
/// columns, test cases and outputs, deleted test cases and a deleted problem.
async fn write_garbage(c: &mut Client) {
    for i in 0..6i64 {
        let p = create(c, &format!("v0 {i}"), columns(&[("name", "n0")])).await;
        let mut tcs = Vec::new();
        for j in 0..4 {
            let tc = add(c, p, int_list(vec![i, j])).await;
            set_output(c, p, tc, int(i * j)).await;
            tcs.push(tc);
        }
        for v in 1..4 {
            let request =
                proto::UpdateProblemHtmlRequest { problem_id: p, html: format!("v{v} {i}"), ..Default::default() };
            c.update_problem_html(request).await.unwrap();
        }
        let request = proto::UpdateProblemColumnRequest {
            problem_id: p,
            name: "name".into(),
            value: format!("n1 {i}"),
            ..Default::default()
        };
        c.update_problem_column(request).await.unwrap();
        let request = proto::UpdateTestCaseRequest {
            problem_id: p,
            test_case_id: tcs[0],
            value: Some(string("updated")),
            ..Default::default()
        };
        c.update_test_case(request).await.unwrap();
        let request = proto::UpdateExpectedOutputRequest {
            problem_id: p,
            test_case_id: tcs[1],
            value: Some(double(-0.0)),
            ..Default::default()
        };
        c.update_expected_output(request).await.unwrap();
        c.delete_test_case(proto::TestCaseRef { problem_id: p, test_case_id: tcs[2], ..Default::default() })
            .await
            .unwrap();
        c.delete_expected_output(proto::TestCaseRef { problem_id: p, test_case_id: tcs[3], ..Default::default() })
            .await
            .unwrap();
        if i == 3 {
            c.delete_problem(proto::ProblemRef { problem_id: p, ..Default::default() }).await.unwrap();
        }
    }
}

#[tokio::test]
async fn compact_now_reclaims_garbage_and_keeps_every_live_value() {
    let (_dir, server) = server(&["--segment-bytes", "2048"]).await;
    let mut c = server.client().await;
    write_garbage(&mut c).await;
    let before = dump_all(&mut c).await;
    let stats_before = stats(&mut c).await;
    assert!(stats_before.garbage_bytes > 0);
    assert_eq!(stats_before.compactions, 0);

    let report = c.compact_now(proto::CompactNowRequest {}).await.expect("CompactNow").into_inner();
    assert!(report.segments_in >= 2, "{report:?}");
    assert!(report.bytes_out < report.bytes_in, "{report:?}");
    assert!(report.records_dropped > 0, "{report:?}");

    let after = stats(&mut c).await;
    assert_eq!(after.compactions, 1);
    assert_eq!(after.garbage_bytes, 0, "everything sealed was compacted: {after:?}");
    assert!(after.total_bytes < stats_before.total_bytes, "{stats_before:?} -> {after:?}");
    // Blob and columns kept in two records are merged into one: live bytes
    // may shrink, never grow.
    assert!(after.live_bytes <= stats_before.live_bytes, "{stats_before:?} -> {after:?}");
    assert_eq!(after.last_compaction_bytes_in, report.bytes_in);
    assert_eq!(after.last_compaction_bytes_out, report.bytes_out);
    assert_eq!(
        (after.problems_in_index, after.test_cases, after.expected_outputs),
        (stats_before.problems_in_index, stats_before.test_cases, stats_before.expected_outputs)
    );
    assert_eq!(dump_all(&mut c).await, before, "compaction changed what the store returns");

    // Writes after a compaction work and the store stays consistent.
    let p = create(&mut c, "after compaction", Columns::new()).await;
    assert!(p > *before.keys().last().unwrap());
    assert_eq!(html(&mut c, p).await, "after compaction");
}

#[tokio::test]
async fn compact_now_without_garbage_does_nothing_and_succeeds() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let empty = c.compact_now(proto::CompactNowRequest {}).await.expect("CompactNow on an empty store").into_inner();
    assert_eq!(empty, proto::CompactNowResponse::default());
    let p = create(&mut c, "only live data", columns(&[("a", "b")])).await;
    add(&mut c, p, int(1)).await;
    let before = dump_all(&mut c).await;
    // The first compaction drops the id reservation and the durability
    // marks; the second finds nothing at all to drop.
    c.compact_now(proto::CompactNowRequest {}).await.expect("CompactNow");
    assert_eq!(stats(&mut c).await.garbage_bytes, 0);
    let report = c.compact_now(proto::CompactNowRequest {}).await.expect("CompactNow").into_inner();
    assert_eq!(report, proto::CompactNowResponse::default());
    assert_eq!(dump_all(&mut c).await, before);
}

#[tokio::test]
async fn compact_now_twice_keeps_data_and_counts_compactions() {
    let (_dir, server) = server(&["--segment-bytes", "2048"]).await;
    let mut c = server.client().await;
    write_garbage(&mut c).await;
    c.compact_now(proto::CompactNowRequest {}).await.expect("first CompactNow");
    write_garbage(&mut c).await;
    let before = dump_all(&mut c).await;
    let report = c.compact_now(proto::CompactNowRequest {}).await.expect("second CompactNow").into_inner();
    assert!(report.records_dropped > 0, "{report:?}");
    let s = stats(&mut c).await;
    assert_eq!(s.compactions, 2);
    assert_eq!(s.garbage_bytes, 0, "{s:?}");
    assert_eq!(dump_all(&mut c).await, before);
}

// ----- health and reflection --------------------------------------------------

#[tokio::test]
async fn health_reports_serving_overall_and_for_lse() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let (_dir, server) = server(&[]).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "lse.Lse"] {
        let response = health.check(HealthCheckRequest { service: service.into() }).await;
        let status = response.unwrap_or_else(|e| panic!("health check of {service:?}: {e:?}")).into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.Such".into() }).await;
    assert_status(unknown, Code::NotFound, &[]);
}

#[tokio::test]
async fn reflection_lists_the_lse_and_health_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let (_dir, server) = server(&[]).await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("lse.Lse".into())),
        },
    ];
    let mut stream = reflection.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let mut responses: Vec<ServerReflectionResponse> = Vec::new();
    while let Some(response) = stream.message().await.unwrap() {
        responses.push(response);
    }
    assert_eq!(responses.len(), 2);
    let Some(MessageResponse::ListServicesResponse(list)) = &responses[0].message_response else {
        panic!("not a service list: {:?}", responses[0]);
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"lse.Lse"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    let Some(MessageResponse::FileDescriptorResponse(files)) = &responses[1].message_response else {
        panic!("not a file descriptor: {:?}", responses[1]);
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

// ----- a whole session --------------------------------------------------------

#[tokio::test]
async fn a_full_session_reads_back_exactly_what_was_written() {
    let (_dir, server) = server(&[]).await;
    let mut c = server.client().await;
    let mut expected: BTreeMap<u64, ProblemDump> = BTreeMap::new();
    for i in 0..5i64 {
        let cols = columns(&[("name", &format!("problem {i}"))]);
        let p = create(&mut c, &format!("<p>{i}</p>"), cols.clone()).await;
        let mut test_cases = Vec::new();
        for j in 0..i {
            let tc = add(&mut c, p, int_list(vec![i, j])).await;
            let out = if j % 2 == 0 {
                set_output(&mut c, p, tc, int(i * j)).await;
                Some(Canon::Int(i * j))
            } else {
                None
            };
            test_cases.push((tc, Canon::IntList(vec![i, j]), out));
        }
        expected.insert(p, ProblemDump { html: format!("<p>{i}</p>"), columns: cols, test_cases });
    }
    assert_eq!(dump_all(&mut c).await, expected);
}

#[tokio::test]
async fn get_all_test_cases_pages_follow_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let mut c = server.client().await;
    let p = create(&mut c, "paged", Columns::new()).await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(add(&mut c, p, int(i)).await);
    }
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let request =
            proto::GetAllTestCasesRequest { problem_id: p, page_size: 10, page_token: token, ..Default::default() };
        let page = c.get_all_test_cases(request).await.unwrap().into_inner();
        pages.push(page.test_cases.iter().map(|tc| tc.test_case_id).collect::<Vec<_>>());
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5]);
    assert_eq!(pages.concat(), ids);
    let bad =
        proto::GetAllTestCasesRequest { problem_id: p, page_size: 10, page_token: "x".into(), ..Default::default() };
    assert_status(c.get_all_test_cases(bad).await, Code::InvalidArgument, &["page_token"]);
}
