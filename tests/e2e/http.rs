//! `serve --http` end to end: the real binary, real HTTP over real sockets. The API answers with
//! the CLI's own JSON; the SSE stream carries every stored change in order and resumes after
//! `Last-Event-ID` without a gap; tokens, limits and errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::http::{get, request, serve_http, Sse};
use ivrstate_tests::{agent_line, Feed, Ivrstate};
use serde_json::Value;

fn ivrstate() -> Ivrstate {
    Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"))
}

/// A store with the simulator's day of 6 agents.
fn store() -> Ivrstate {
    let t = ivrstate();
    let log = t.path("ts.log");
    std::fs::write(
        &log,
        t.ok(&["simulate", "--agents", "6", "--events", "800"]),
    )
    .unwrap();
    t.ok(&["ingest", "--tserver", "TS_SIP", log.to_str().unwrap()]);
    t
}

#[test]
fn the_api_answers_with_the_json_of_the_cli() {
    let t = store();
    let window = "from=2015-08-17T09:00:00Z&to=2015-08-17T12:00:00Z";
    let cli = |args: &[&str]| t.json(args);
    let w = [
        "--from",
        "2015-08-17T09:00:00Z",
        "--to",
        "2015-08-17T12:00:00Z",
    ];
    let with = |base: &[&'static str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend(w);
        v
    };
    let expected = [
        ("/api/v1/status".to_owned(), cli(&["status", "--json"])),
        (
            "/api/v1/status?at=2015-08-17T10:00:00Z".to_owned(),
            cli(&["status", "--json", "--at", "2015-08-17T10:00:00Z"]),
        ),
        (
            "/api/v1/status?seq=100".to_owned(),
            cli(&["status", "--json", "--seq", "100"]),
        ),
        (
            format!("/api/v1/history?agent=1002&{window}"),
            cli(&with(&["history", "--json", "--agent", "1002"])),
        ),
        (
            format!("/api/v1/history?dn=7003&tserver=TS_SIP&{window}"),
            cli(&with(&[
                "history",
                "--json",
                "--dn",
                "7003",
                "--tserver",
                "TS_SIP",
            ])),
        ),
        (
            format!("/api/v1/audit?{window}"),
            cli(&with(&["audit", "--json"])),
        ),
        (
            format!("/api/v1/audit?{window}&interval=15m&tz=%2B02:00"),
            cli(&with(&[
                "audit",
                "--json",
                "--interval",
                "15m",
                "--tz",
                "+02:00",
            ])),
        ),
        (
            format!("/api/v1/audit?{window}&sessions=true"),
            cli(&with(&["audit", "--json", "--sessions"])),
        ),
        (
            "/api/v1/config".to_owned(),
            cli(&["config", "show", "--json"]),
        ),
    ];
    let (_serve, http) = serve_http(&t, &[]);
    for (path, want) in &expected {
        let r = get(http, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(&r.json(), want, "{path}");
    }
    // The same store through the API as a whole: ready, healthy, metrics in Prometheus text.
    assert_eq!(get(http, "/healthz").json()["ok"], true);
    let metrics = get(http, "/metrics");
    assert!(
        metrics.text().contains("ivrstate_events_appended_total"),
        "{}",
        metrics.text()
    );
    assert!(metrics
        .text()
        .contains("ivrstate_sse_readers_dropped_total 0"));
}

#[test]
fn errors_are_json_with_a_status_that_says_what_went_wrong() {
    let t = store();
    let (_serve, http) = serve_http(&t, &[]);
    let cases = [
        ("/api/v1/status?at=yesterday", 400, "invalid time"),
        (
            "/api/v1/status?seq=999999999",
            404,
            "beyond the end of the log",
        ),
        (
            "/api/v1/status?colour=red",
            400,
            "unknown parameter \"colour\"",
        ),
        ("/api/v1/history", 400, "exactly one of agent, dn or port"),
        ("/api/v1/history?port=IVR_1", 400, "IVR:PORT"),
        ("/api/v1/history?port=NOPE:01", 404, "no port NOPE:01"),
        (
            "/api/v1/audit?from=2015-08-18&to=2015-08-17",
            400,
            "after to",
        ),
        ("/api/v1/audit?interval=7m", 400, "15m, 30m, 1h or 1d"),
        ("/api/v1/audit?interval=1h&tz=Mars/Olympus", 400, "tz="),
        ("/api/v1/nothing", 404, "no such route"),
    ];
    for (path, status, needle) in cases {
        let r = get(http, path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(needle), "{path}: {error}");
    }
    let post = request(http, "POST", "/api/v1/status", &[], b"{}");
    assert_eq!(post.status, 405);
    assert!(post.json()["error"].as_str().unwrap().contains("read-only"));
    let big = vec![b'x'; 64 * 1024];
    let r = request(http, "GET", "/api/v1/status", &[], &big);
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn a_token_guards_the_api_and_an_open_network_bind_needs_one() {
    let t = store();
    let (_serve, http) = serve_http(&t, &["--http-token", "s3cret"]);
    let denied = get(http, "/api/v1/status");
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
    assert_eq!(get(http, "/metrics").status, 401);
    let wrong = request(
        http,
        "GET",
        "/api/v1/status",
        &[("Authorization", "Bearer s3cre7")],
        b"",
    );
    assert_eq!(wrong.status, 401);
    let ok = request(
        http,
        "GET",
        "/api/v1/status",
        &[("Authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(ok.status, 200);
    assert_eq!(get(http, "/api/v1/config?access_token=s3cret").status, 200);
    // Probes and the page reveal nothing and need no token.
    assert_eq!(get(http, "/healthz").status, 200);
    assert_eq!(get(http, "/readyz").status, 200);
    assert_eq!(get(http, "/").status, 200);

    let other = ivrstate();
    let out = other.run(&["serve", "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--http-token"), "{stderr}");
}

#[test]
fn sse_carries_every_stored_change_in_order_and_resumes_after_the_last_id() {
    let t = store();
    let (mut serve, http) = serve_http(&t, &[]);
    let feed_addr = serve.addr("feed");
    let seq0 = get(http, "/api/v1/status").json()["seq"].as_u64().unwrap();
    let mut sse = Sse::open(http, &format!("/api/v1/events?after={seq0}"), &[]);
    assert_eq!(sse.status, 200);
    let base = 1_439_900_000u64;
    let lines: Vec<String> = (0..40u64)
        .map(|i| {
            let kind = if i.is_multiple_of(2) {
                "NotReady"
            } else {
                "Ready"
            };
            agent_line(
                90_000_000 + i,
                &(base + i).to_string(),
                &format!("70{:02}", i % 5 + 1),
                "1001",
                kind,
            )
        })
        .collect();
    Feed::connect(feed_addr).send(&lines);
    let mut seqs = Vec::new();
    while seqs.len() < 40 {
        let e = sse.next_event().expect("stream open");
        assert_eq!(e.event, "change");
        let data: Value = serde_json::from_str(&e.data).unwrap();
        let seq = data["seq"].as_u64().unwrap();
        assert_eq!(e.id.as_deref(), Some(seq.to_string().as_str()));
        let agent = &data["agents"][0];
        let i = seqs.len() as u64;
        assert_eq!(agent["dn"], format!("70{:02}", i % 5 + 1));
        assert_eq!(
            agent["status"],
            if i.is_multiple_of(2) {
                "NotReady"
            } else {
                "Ready"
            }
        );
        seqs.push(seq);
    }
    // In log order (other records, such as the feed's own, may sit between them).
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(seqs[0] > seq0);
    // A reader that lost its connection after the 15th change resumes at the 16th.
    let last = seqs[14].to_string();
    let mut resumed = Sse::open(http, "/api/v1/events", &[("Last-Event-ID", &last)]);
    for want in &seqs[15..] {
        let e = resumed.next_event().unwrap();
        assert_eq!(e.id.as_deref(), Some(want.to_string().as_str()));
    }
    // Stored before published: what the stream said is what status now says.
    let status = get(http, "/api/v1/status").json();
    assert!(status["seq"].as_u64().unwrap() >= seqs[39]);
    let agent = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["dn"] == "7005")
        .unwrap();
    assert_eq!(agent["status"], "Ready");
}

#[test]
fn a_reader_that_does_not_read_is_dropped_while_another_gets_everything() {
    let t = store();
    let (mut serve, http) = serve_http(&t, &[]);
    let feed_addr = serve.addr("feed");
    let seq0 = get(http, "/api/v1/status").json()["seq"].as_u64().unwrap();
    // Never read from: its socket buffers fill, then it falls behind the stream's bound.
    let _stalled = Sse::open(http, "/api/v1/events", &[]);
    let mut good = Sse::open(http, &format!("/api/v1/events?after={seq0}"), &[]);
    let total = 60_000u64;
    let reader = std::thread::spawn(move || {
        let (mut last, mut changes) = (seq0, 0);
        while changes < total {
            let e = good.next_event().expect("the good reader keeps its stream");
            let id: u64 = e.id.unwrap().parse().unwrap();
            assert!(id > last, "no repeat, in order");
            last = id;
            changes += 1;
        }
        changes
    });
    let base = 1_439_900_000u64;
    let mut feed = Feed::connect(feed_addr);
    for chunk in 0..(total / 5000) {
        let lines: Vec<String> = (0..5000)
            .map(|i| {
                let n = chunk * 5000 + i;
                let kind = if n.is_multiple_of(2) {
                    "NotReady"
                } else {
                    "Ready"
                };
                agent_line(
                    80_000_000 + n,
                    &(base + n).to_string(),
                    "7001",
                    "1001",
                    kind,
                )
            })
            .collect();
        feed.send(&lines);
    }
    assert_eq!(reader.join().unwrap(), total);
    ivrstate_tests::wait_for("the stalled reader to be dropped", || {
        let m = get(http, "/metrics").text();
        (!m.contains("ivrstate_sse_readers_dropped_total 0\n")).then_some(())
    });
}
