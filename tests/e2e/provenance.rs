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
            (1, format!("file {log_s}")),
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
            format!("file {log_s}"),
            format!("feed {feed_local} #1 (token recorder)")
        ]
    );
    let csv = t.ok(&["history", "--agent", "1001", "--csv"]);
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with(",source"));
    assert!(lines.next().unwrap().ends_with(&format!(",file {log_s}")));
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
    assert!(after[before.len()..]
        .iter()
        .all(|r| r["source"] == format!("file {more_s}").as_str()));
    assert!(t.ok(&["verify"]).starts_with("ok: "));
}
