//! Every record says where it came from: a file, a feed connection (with its token), a GLI
//! client, a configuration command; shown by `export` and by `history --json`/`--csv` for the
//! record that opened each interval. A store from before provenance says so for its records.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::{attr, copy_dir, repo_root, wait_for, Gli, Ivrstate};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

const TOKEN: &str = "provenance-token-0123456789";

const CONFIG: &str = r#"
[[tserver]]
name = "TS_A"

[[ivr]]
name = "IVR_1"
tservers = ["TS_A"]

[[ivr.port]]
num = "01"
dn = "7001"
"#;

/// A printout of `event` for agent 1001 on DN 7001, and the Int line that ends it.
fn printout(event: &str, seq: u64, secs: u64) -> String {
    format!(
        "@08:00:{s:02}.0000 [0] 8.1.101.33 distribute_event: message {event}\n\
         \tAttributeEventSequenceNumber\t{seq:016x}\n\
         \tAttributeTimeinuSecs\t0\n\
         \tAttributeTimeinSecs\t{secs}\n\
         \tAttributeThisDN\t'7001'\n\
         \tAttributeAgentID\t'1001'\n\
         2015-08-17T08:00:00.000 Int 04545 Interaction message sent\n",
        s = secs % 60
    )
}

const T0: u64 = 1_439_798_400; // 2015-08-17T08:00:00Z

fn export(t: &Ivrstate) -> Vec<Value> {
    t.ok(&["export"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn source_of_kind(records: &[Value], kind: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["event"].get(kind).is_some())
        .map(|r| r["source"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn records_from_a_file_a_feed_a_gli_client_and_a_command_each_name_their_source() {
    let t = Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"));
    let cfg = t.path("ivr.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let cfg_s = cfg.display().to_string();
    t.ok(&["config", "apply", &cfg_s]);
    let log = t.path("a.log");
    std::fs::write(
        &log,
        format!(
            "Application name:\tTS_A\n\n{}",
            printout("EventAgentLogin", 1, T0 + 1)
        ),
    )
    .unwrap();
    let log_s = log.display().to_string();
    t.ok(&["ingest", &log_s]);

    let tokens = t.path("tokens");
    std::fs::write(&tokens, format!("recorder {TOKEN}\n")).unwrap();
    let tokens_s = tokens.display().to_string();
    let mut serve = t.spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--feed-listen",
        "127.0.0.1:0",
        "--feed-token-file",
        &tokens_s,
        "--tserver",
        "TS_A",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let gli_addr = serve.addr("gli");
    let feed_addr = serve.addr("feed");
    let metrics_addr = serve.addr("metrics");
    let mut feed = TcpStream::connect(feed_addr).unwrap();
    let feed_local = feed.local_addr().unwrap();
    feed.write_all(format!("AUTH {TOKEN}\n{}", printout("EventAgentReady", 2, T0 + 2)).as_bytes())
        .unwrap();
    let mut ack = String::new();
    BufReader::new(feed.try_clone().unwrap())
        .read_line(&mut ack)
        .unwrap();
    assert_eq!(ack, "{\"committed\":1}\n");

    let mut gli = Gli::connect(gli_addr);
    let gli_local = gli.local_addr();
    wait_for("a login answered OK", || {
        let resp = gli.login("1", "IVR_1", "4.0", false);
        (attr(&resp, "Status").as_deref() == Some("OK")).then_some(())
    });
    gli.send("2", "<LogMsg Text='provenance test'/>");
    // Stored: the feed's event and the request.
    wait_for("the request to be stored", || {
        let mut http = TcpStream::connect(metrics_addr).unwrap();
        http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut http, &mut body).unwrap();
        body.contains("\nivrstate_events_appended_total 2\n")
            .then_some(())
    });
    assert!(serve.terminate().success());
    drop(feed);

    let records = export(&t);
    let config = source_of_kind(&records, "Config");
    assert!(!config.is_empty());
    assert!(
        config
            .iter()
            .all(|s| s == &format!("ivrstate config apply {cfg_s}")),
        "{config:?}"
    );
    let tlib: Vec<(u64, String)> = records
        .iter()
        .filter(|r| r["event"]["TLib"]["source_seq"].is_u64())
        .map(|r| {
            (
                r["event"]["TLib"]["source_seq"].as_u64().unwrap(),
                r["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        tlib,
        vec![
            (1, format!("file {log_s}:3")),
            (2, format!("feed {feed_local} #1 (token recorder)")),
        ]
    );
    let requests = source_of_kind(&records, "Request");
    assert_eq!(requests, vec![format!("GLI client IVR_1 at {gli_local}")]);

    // history names the source of the record that opened each interval.
    let history = t.json(&["history", "--agent", "1001", "--json"]);
    let sources: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            format!("file {log_s}:3"),
            format!("feed {feed_local} #1 (token recorder)")
        ]
    );
    let csv = t.ok(&["history", "--agent", "1001", "--csv"]);
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with(",source"));
    assert!(lines.next().unwrap().ends_with(&format!(",file {log_s}:3")));
}

#[test]
fn records_from_before_provenance_say_so_and_new_ones_name_their_source() {
    let t = Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"));
    copy_dir(
        &repo_root().join("tests/fixtures/store-format-2/store"),
        &t.db(),
    );
    std::fs::create_dir_all(t.db().join("blobs")).unwrap();
    let before = export(&t);
    assert_eq!(before.len(), 1208);
    assert!(before
        .iter()
        .all(|r| r["source"] == "unknown, from before provenance"));
    let more = repo_root().join("examples/ts_sip.log");
    let more_s = more.display().to_string();
    t.ok(&["ingest", &more_s]);
    let after = export(&t);
    assert!(after.len() > before.len());
    assert_eq!(after[..before.len()], before[..], "old records unchanged");
    let text = std::fs::read_to_string(&more).unwrap();
    for r in &after[before.len()..] {
        let line = line_in(r, &format!("file {more_s}"));
        assert_eq!(printout_seq(&text, line), source_seq(r), "{r}");
    }
    assert!(t.ok(&["verify"]).starts_with("ok: "));
}

/// The line a record's source names, after `prefix:`.
fn line_in(record: &Value, prefix: &str) -> usize {
    let source = record["source"].as_str().unwrap();
    let line = source
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{source:?} is not {prefix:?}:LINE"));
    line.parse().unwrap()
}

/// The `AttributeEventSequenceNumber` of the printout that starts at `line` (1-based) of
/// `text`; `None` if no printout starts there.
fn printout_seq(text: &str, line: usize) -> Option<u64> {
    let mut lines = text.lines().skip(line - 1);
    if !lines.next()?.starts_with('@') {
        return None;
    }
    lines
        .take_while(|l| l.starts_with('\t'))
        .find_map(|l| l.strip_prefix("\tAttributeEventSequenceNumber\t"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
}

fn source_seq(record: &Value) -> Option<u64> {
    record["event"]["TLib"]["source_seq"].as_u64()
}

#[test]
fn records_from_files_name_the_line_their_printout_starts_at() {
    use std::io::Write as _;
    let t = Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"));
    // A plain log, and a directory holding a gzip'd log and an NDJSON file: each record names
    // its file and the line of that file (the decompressed one's) where its printout starts.
    let a = t.simulate_to("a.log", &["--agents", "5", "--events", "60", "--seed", "1"]);
    let dir = t.path("more");
    std::fs::create_dir(&dir).unwrap();
    let b_text = t.ok(&[
        "simulate",
        "--agents",
        "5",
        "--events",
        "40",
        "--seed",
        "2",
        "--tserver",
        "TS_B",
    ]);
    let b = dir.join("b.log.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b_text.as_bytes()).unwrap();
    std::fs::write(&b, gz.finish().unwrap()).unwrap();
    // NDJSON records from another store, a line each, after two blank lines.
    let other = Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"));
    let c_src = other.simulate_to(
        "c.log",
        &[
            "--agents",
            "3",
            "--events",
            "10",
            "--seed",
            "3",
            "--tserver",
            "TS_C",
        ],
    );
    other.ok(&["ingest", &c_src]);
    let c = dir.join("c.ndjson");
    std::fs::write(&c, format!("\n\n{}", other.ok(&["export"]))).unwrap();
    let dir_s = dir.display().to_string();
    t.ok(&["ingest", &a, &dir_s]);

    let records = export(&t);
    assert_eq!(records.len(), 110);
    let a_text = std::fs::read_to_string(&a).unwrap();
    for r in &records[..60] {
        let line = line_in(r, &format!("file {a}"));
        assert_eq!(printout_seq(&a_text, line), source_seq(r), "{r}");
    }
    for r in &records[60..100] {
        let line = line_in(r, &format!("file {}", b.display()));
        assert_eq!(printout_seq(&b_text, line), source_seq(r), "{r}");
    }
    let lines: Vec<usize> = records[100..]
        .iter()
        .map(|r| line_in(r, &format!("file {}", c.display())))
        .collect();
    assert_eq!(lines, (3..13).collect::<Vec<_>>());

    // A followed file (`serve --follow`): the lines go on as it grows.
    let f = t.path("f.log");
    std::fs::write(&f, "Application name:\tTS_F\n\n").unwrap();
    let f_s = f.display().to_string();
    let mut serve = t.spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--follow",
        &f_s,
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = serve.addr("metrics");
    let appended = |n: u64| {
        wait_for(&format!("{n} events appended"), || {
            let mut http = TcpStream::connect(metrics).unwrap();
            http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut http, &mut body).unwrap();
            body.contains(&format!("\nivrstate_events_appended_total {n}\n"))
                .then_some(())
        })
    };
    let grow = |text: &str| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    };
    grow(&printout("EventAgentLogin", 1, T0 + 1));
    appended(1);
    grow(&format!(
        "{}{}",
        printout("EventAgentReady", 2, T0 + 2),
        printout("EventAgentNotReady", 3, T0 + 3)
    ));
    appended(3);
    assert!(serve.terminate().success());
    let followed: Vec<String> = export(&t)[110..]
        .iter()
        .map(|r| r["source"].as_str().unwrap().to_owned())
        .collect();
    let f_text = std::fs::read_to_string(&f).unwrap();
    assert_eq!(
        followed,
        [3, 10, 17].map(|l| format!("file {f_s} (followed):{l}"))
    );
    for (line, seq) in [(3, 1), (10, 2), (17, 3)] {
        assert_eq!(printout_seq(&f_text, line), Some(seq));
    }
}
