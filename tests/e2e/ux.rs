//! What a person meets: help and completions, one-line errors with the right exit status,
//! readable tables (aligned, UTC or `--tz`, no colour off a terminal or with NO_COLOR), the SVG
//! timelines, the Prometheus metrics of `serve`, and the README's commands run as printed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::{attr, repo_root, wait_for, Gli, Ivrstate, DEADLINE};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ivrstate() -> Ivrstate {
    Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"))
}

fn examples() -> PathBuf {
    repo_root().join("examples")
}

fn example(name: &str) -> String {
    examples().join(name).display().to_string()
}

/// A store holding the bundled examples: configuration (effective before the logs) and both
/// T-Server logs.
fn with_examples() -> Ivrstate {
    let t = ivrstate();
    t.ok(&[
        "config",
        "apply",
        "--effective",
        "2015-08-17T00:00:00Z",
        &example("ivr.toml"),
    ]);
    t.ok(&["ingest", &example("ts_sip.log"), &example("ts_sip_b.log")]);
    t
}

const COMMANDS: [&str; 13] = [
    "ingest",
    "config",
    "config apply",
    "config show",
    "serve",
    "status",
    "history",
    "audit",
    "replay",
    "verify",
    "rebuild",
    "export",
    "simulate",
];

#[test]
fn every_command_has_help_with_an_example() {
    let t = ivrstate();
    let top = t.ok(&["--help"]);
    assert!(
        top.contains("Examples:") && top.contains("Exit status"),
        "{top}"
    );
    for command in COMMANDS.iter().chain(&["completions"]) {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let help = t.ok(&args);
        assert!(
            help.contains("Example: ivrstate"),
            "`ivrstate {command} --help` has no example:\n{help}"
        );
        assert!(help.contains("Usage: ivrstate"), "{help}");
    }
}

#[test]
fn completions_for_every_shell() {
    let t = ivrstate();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = t.ok(&["completions", shell]);
        for word in ["ivrstate", "history", "agent", "replay", "speed"] {
            assert!(script.contains(word), "{shell} completions lack {word:?}");
        }
    }
    // The bash script is valid bash.
    let path = t.path("ivrstate.bash");
    std::fs::write(&path, t.ok(&["completions", "bash"])).unwrap();
    if let Ok(status) = Command::new("bash").arg("-n").arg(&path).status() {
        assert!(status.success(), "bash -n rejects the completion script");
    }
    let out = t.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Runs and checks: the exit status, and a stderr of exactly one line starting `error: ` that
/// contains every `needle` (what, where, what to do).
fn one_line_error(t: &Ivrstate, args: &[&str], code: i32, needles: &[&str]) {
    let out = t.run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "ivrstate {args:?}: expected exit {code}, stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "ivrstate {args:?}: not one line:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "ivrstate {args:?}: {needle:?} missing from {stderr}"
        );
    }
    assert!(out.stdout.is_empty(), "errors go to stderr only");
}

#[test]
fn user_errors_are_one_line_with_the_exit_status_of_the_interface() {
    let t = ivrstate();
    // Usage errors: exit 2, naming the flag and pointing at the help.
    one_line_error(&t, &["bogus"], 2, &["bogus", "ivrstate --help"]);
    one_line_error(
        &t,
        &["status", "--at", "yesterday"],
        2,
        &[
            "--at",
            "RFC 3339",
            "epoch seconds",
            "ivrstate status --help",
        ],
    );
    one_line_error(
        &t,
        &["history"],
        2,
        &["--agent", "--dn", "--port", "ivrstate history --help"],
    );
    one_line_error(
        &t,
        &["history", "--port", "01"],
        2,
        &["--port", "IVR:PORT", "IVR_1:01"],
    );
    one_line_error(
        &t,
        &[
            "history",
            "--agent",
            "1001",
            "--from",
            "2015-08-18",
            "--to",
            "2015-08-17",
        ],
        2,
        &["--from", "--to", "swap"],
    );
    one_line_error(
        &t,
        &["replay", "--xml", "--speed", "0"],
        2,
        &["--speed", "--max"],
    );
    one_line_error(
        &t,
        &["status", "--tz", "Mars"],
        2,
        &["--tz", "+02:00", "Europe/Berlin"],
    );
    // Once panicked (exit 101): the RFC 3339 parser sliced inside the `é`.
    one_line_error(
        &t,
        &["status", "--at", "2015-08-17T23:16+1\u{e9}1"],
        2,
        &["--at", "2015-08-17T23:16+1\u{e9}1", "RFC 3339"],
    );

    // Errors: exit 1, saying where (file:line, address) and what.
    // An NDJSON record whose time holds a non-ASCII character (this panicked too): located and
    // counted malformed, the good record beside it kept. (A store of its own: the checks below
    // want an empty one.)
    let nd_store = ivrstate();
    let nd = nd_store.path("odd-time.ndjson");
    std::fs::write(
        &nd,
        "{\"time\":\"2015-08-17T23:16+1\u{e9}1\",\"recorded\":\"2015-08-17T00:00:00Z\",\"event\":{\"Config\":{\"ServerSettings\":{\"version\":\"1\"}}}}\n\
         {\"time\":\"2015-08-17T00:00:00Z\",\"recorded\":\"2015-08-17T00:00:00Z\",\"event\":{\"Config\":{\"ServerSettings\":{\"version\":\"2\"}}}}\n",
    )
    .unwrap();
    let out = nd_store.run(&[
        "ingest",
        "--json",
        "--format",
        "ndjson",
        &nd.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["malformed"], 1, "{summary}");
    assert_eq!(summary["appended"], 1, "{summary}");
    assert!(
        summary["errors"][0]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("odd-time.ndjson"))
            && summary["errors"][0]["line"] == 1
            && summary["errors"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("invalid time")),
        "{summary}"
    );
    let missing = t.path("nosuch.log").display().to_string();
    one_line_error(&t, &["ingest", &missing], 1, &["nosuch.log"]);
    let bad = t.path("bad.toml");
    std::fs::write(
        &bad,
        "[[tserver]]\nname = \"TS_SIP\"\n\n[[ivr]]\nname = \"IVR_1\"\ntservers = [\"TS_NOPE\"]\n",
    )
    .unwrap();
    one_line_error(
        &t,
        &["config", "apply", &bad.display().to_string()],
        1,
        &["bad.toml:", "TS_NOPE"],
    );
    one_line_error(
        &t,
        &["status", "--seq", "99"],
        1,
        &["--seq 99", "last seq 0"],
    );

    // The store is locked while `serve` runs: say so, and what to do.
    let mut serve = t.spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let gli = serve.addr("gli");
    // serve announces its address before its appender opens the store: wait until it holds it
    // (a `status` that gets in first just reads the store, and serve waits for it).
    wait_for("serve to open the store", || {
        (t.run(&["status"]).status.code() == Some(1)).then_some(())
    });
    one_line_error(&t, &["status"], 1, &["in use", "serve", "db"]);
    // A second server on the same address: the address and the flag.
    let other = ivrstate();
    one_line_error(
        &other,
        &["serve", "--listen", &gli.to_string()],
        1,
        &[&gli.to_string(), "--listen"],
    );
    assert!(serve.terminate().success());
}

#[test]
fn an_empty_store_says_what_to_do_next() {
    let t = ivrstate();
    let out = t.run(&["status"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is empty") && stderr.contains("ivrstate ingest"),
        "{stderr}"
    );
    // Scripts get the JSON alone.
    let out = t.run(&["status", "--json"]);
    assert!(out.stderr.is_empty());
}

/// The column where each header cell starts.
fn header_columns(header: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let bytes = header.as_bytes();
    for i in 0..bytes.len() {
        let word_start = bytes[i] != b' ' && (i == 0 || (i >= 2 && &bytes[i - 2..i] == b"  "));
        if word_start {
            starts.push(i);
        }
    }
    starts
}

#[test]
fn tables_are_aligned_in_utc_or_tz_and_plain_off_a_terminal() {
    let t = with_examples();
    let status = t.ok(&["status"]);
    assert!(!status.contains('\x1b'), "no colour off a terminal");
    assert!(
        status.starts_with("state at 2015-08-18 16:59:"),
        "UTC by default: {status}"
    );
    assert!(status.contains("Ports (6):"), "{status}");
    // Every row of the agents table has its cells at the header's columns.
    let agents: Vec<&str> = status
        .lines()
        .skip_while(|l| !l.starts_with("Agents ("))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(agents.len() > 50, "{status}");
    let columns = header_columns(agents[0]);
    assert_eq!(columns.len(), 7, "{}", agents[0]);
    for row in &agents[2..] {
        for &c in &columns {
            let b = row.as_bytes();
            assert!(
                c == 0 || (c <= b.len() && b[c - 1] == b' '),
                "misaligned row {row:?} at {c}"
            );
        }
        assert!(row.ends_with('Z'), "SINCE in UTC: {row}");
    }

    // --tz: the same moments in a fixed offset.
    let utc = t.ok(&["history", "--agent", "1002", "--to", "2015-08-17T12:00:00Z"]);
    let east = t.ok(&[
        "history",
        "--agent",
        "1002",
        "--to",
        "2015-08-17T12:00:00Z",
        "--tz",
        "+02:00",
    ]);
    let first_start = |table: &str| {
        let header = table.lines().next().unwrap();
        let at = header.find("START").unwrap();
        let mut cells = table.lines().nth(2).unwrap()[at..].split_whitespace();
        format!("{} {}", cells.next().unwrap(), cells.next().unwrap())
    };
    let (u, e) = (first_start(&utc), first_start(&east));
    assert!(u.ends_with('Z') && e.ends_with("+02:00"), "{u} / {e}");
    let hour = |s: &str| s[11..13].parse::<u32>().unwrap();
    assert_eq!((hour(&u) + 2) % 24, hour(&e), "{u} / {e}");

    // CSV: named like the JSON fields, one row per interval, RFC 3339 times.
    let json = t.json(&["history", "--agent", "1002", "--json"]);
    let csv = t.ok(&["history", "--agent", "1002", "--csv"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("agent_id,tserver,dn,status,work_mode,reason,start,end,duration_s,start_seq,end_seq,source")
    );
    assert_eq!(lines.count(), json.as_array().unwrap().len());
    let first = csv.lines().nth(1).unwrap();
    assert!(
        first.contains(json[0]["start"].as_str().unwrap()),
        "{first}"
    );
    let audit = t.ok(&["audit", "--from", "2015-08-17", "--to", "2015-08-18"]);
    let row = audit.lines().nth(2).unwrap();
    assert!(
        row.split_whitespace().nth(2).unwrap().contains(':'),
        "durations as H:MM:SS for people: {row}"
    );
}

/// Runs `cmd` under a pseudo-terminal (util-linux `script`), returning what it printed.
fn on_a_terminal(cmd: &str, no_color: bool) -> Option<String> {
    let mut c = Command::new("script");
    c.args(["-qec", cmd, "/dev/null"])
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if no_color {
        c.env("NO_COLOR", "1");
    }
    let out = c.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn colours_only_on_a_terminal_and_never_with_no_color() {
    let t = with_examples();
    let cmd = format!(
        "{} --db {} status",
        env!("CARGO_BIN_EXE_ivrstate"),
        t.db().display()
    );
    let Some(coloured) = on_a_terminal(&cmd, false) else {
        eprintln!("skipped: no `script` to make a terminal");
        return;
    };
    assert!(coloured.contains("\x1b[32mReady"), "{coloured}");
    let plain = on_a_terminal(&cmd, true).unwrap();
    assert!(!plain.contains('\x1b'), "NO_COLOR: {plain}");
    // Off a terminal (a pipe): no colour either.
    assert!(!t.ok(&["status"]).contains('\x1b'));
}

#[test]
fn progress_bars_only_on_a_terminal_and_a_summary_at_the_end() {
    let t = ivrstate();
    let log = example("ts_sip.log");
    let out = t.command().args(["ingest", &log]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("ETA") && !stderr.contains('\r'),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one-line summary: {stdout}");
    assert!(stdout.starts_with("read 2801 events: "), "{stdout}");
    for (args, summary) in [
        (&["rebuild"][..], "rebuilt derived data from"),
        (&["export"][..], "exported "),
        (
            &["replay", "--max", "--xml", "--to", "2015-08-17T09:00:00Z"][..],
            "replayed ",
        ),
    ] {
        let out = t.command().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with(summary), "{args:?}: {stderr}");
    }
    assert!(t.ok(&["verify"]).starts_with("ok: "));

    // On a terminal, ingest draws a bar (with its rate) on stderr.
    let cmd = format!(
        "{} --db {} ingest --durability relaxed {log}",
        env!("CARGO_BIN_EXE_ivrstate"),
        t.path("db2").display()
    );
    if let Some(screen) = on_a_terminal(&cmd, true) {
        assert!(screen.contains("read 2801 events"), "{screen}");
    }
}

// ---- pictures ----

fn svg_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn class<'a>(doc: &'a roxmltree::Document<'a>, class: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.attribute("class") == Some(class))
        .collect()
}

#[test]
fn audit_svg_draws_a_day_of_200_agents() {
    let t = ivrstate();
    let log = t.path("day.log");
    let out = t.ok(&[
        "simulate", "--agents", "200", "--events", "6000", "--seed", "3",
    ]);
    std::fs::write(&log, out).unwrap();
    t.ok(&[
        "ingest",
        "--durability",
        "relaxed",
        &log.display().to_string(),
    ]);
    let svg = t.path("day.svg");
    let (from, to) = ("2015-08-17T07:00:00Z", "2015-08-17T19:00:00Z");
    let out = t.run(&[
        "audit",
        "--from",
        from,
        "--to",
        to,
        "--svg",
        &svg.display().to_string(),
    ]);
    assert!(out.status.success());
    let text = svg_of(&svg);
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let width: f64 = root.attribute("width").unwrap().parse().unwrap();

    // One row per agent, in order, each labelled.
    let rows = class(&doc, "row");
    assert_eq!(rows.len(), 200, "one row per agent");
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r.attribute("data-agent").unwrap())
        .collect();
    assert_eq!(names[0], "agent 1001");
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    // The legend names every colour used by a band.
    let legend: BTreeMap<String, String> = class(&doc, "legend")
        .iter()
        .map(|g| {
            let rect = g.children().find(|c| c.has_tag_name("rect")).unwrap();
            let text = g.children().find(|c| c.has_tag_name("text")).unwrap();
            (
                rect.attribute("fill").unwrap().to_owned(),
                text.text().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(legend.len(), 7, "{legend:?}");
    let bands = class(&doc, "band");
    assert!(bands.len() > 1000, "{} bands", bands.len());
    let mut statuses = std::collections::BTreeSet::new();
    for b in &bands {
        let fill = b.attribute("fill").unwrap();
        let name = legend
            .get(fill)
            .unwrap_or_else(|| panic!("{fill} not in legend"));
        let status = b.attribute("data-status").unwrap();
        assert!(name.starts_with(status), "{status} drawn as {name}");
        statuses.insert(status);
        let x: f64 = b.attribute("x").unwrap().parse().unwrap();
        let w: f64 = b.attribute("width").unwrap().parse().unwrap();
        assert!(
            x >= 0.0 && w > 0.0 && x + w <= width,
            "band off the picture"
        );
        assert!(b.children().any(|c| c.has_tag_name("title")), "tooltip");
    }
    for s in ["Ready", "NotReady", "LoggedOut"] {
        assert!(statuses.contains(s), "{statuses:?}");
    }
    // Reasons are written in the bands wide enough for them.
    let labels: Vec<&str> = class(&doc, "label")
        .iter()
        .filter_map(|n| n.text())
        .collect();
    assert!(
        labels.iter().any(|l| *l == "Lunch" || *l == "Break"),
        "{labels:?}"
    );
    // A time axis: hourly-ish ticks inside the window, repeated between groups of rows.
    let ticks = class(&doc, "tick");
    assert!((4..=13).contains(&ticks.len()), "{} ticks", ticks.len());
    let first_tick = ticks[0]
        .children()
        .find(|c| c.has_tag_name("text"))
        .and_then(|n| n.text())
        .unwrap();
    assert_eq!(first_tick, "07:00");
    let repeats = ticks[0]
        .children()
        .filter(|c| c.has_tag_name("text"))
        .count();
    assert!(repeats >= 200 / 25, "axis labels repeated: {repeats}");
    let title = class(&doc, "title")[0].text().unwrap();
    assert!(
        title.contains("2015-08-17 07:00 to 2015-08-17 19:00 UTC") && title.contains("200 agents"),
        "{title}"
    );
}

#[test]
fn history_svg_has_one_band_per_interval() {
    let t = with_examples();
    let svg = t.path("agent.svg");
    let args = [
        "history",
        "--agent",
        "1003",
        "--from",
        "2015-08-17T08:00:00Z",
        "--to",
        "2015-08-17T18:00:00Z",
    ];
    let json = t.json(&[&args[..], &["--json"]].concat());
    let intervals = json.as_array().unwrap();
    let svg_s = svg.display().to_string();
    t.ok(&[&args[..], &["--svg", &svg_s, "--tz", "+02:00"]].concat());
    let text = svg_of(&svg);
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(class(&doc, "row").len(), 1);
    let bands = class(&doc, "band");
    assert_eq!(bands.len(), intervals.len());
    for (band, interval) in bands.iter().zip(intervals) {
        assert_eq!(
            band.attribute("data-status"),
            interval["status"].as_str(),
            "bands in time order"
        );
    }
    let title = class(&doc, "title")[0].text().unwrap();
    assert!(
        title.contains("10:00 to 2015-08-17 20:00 +02:00"),
        "{title}"
    );
}

// ---- metrics ----

/// One HTTP GET of the metrics endpoint, parsed into `name{labels}` -> value.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn serve_metrics_move_when_events_are_fed() {
    // What the sample log holds, counted by a plain ingest into another store.
    let counted = ivrstate();
    let expected = counted.json(&["ingest", "--json", &example("ts_sip.log")]);

    let t = ivrstate();
    let config = example("ivr.toml");
    let mut serve = t.spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--feed-listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--config",
        &config,
    ]);
    let gli = serve.addr("gli");
    let feed = serve.addr("feed");
    let metrics = serve.addr("metrics");
    let before = scrape(metrics);
    for name in [
        "ivrstate_events_ingested_total",
        "ivrstate_events_appended_total",
        "ivrstate_events_duplicate_total",
        "ivrstate_input_malformed_total",
        "ivrstate_messages_sent_total",
        "ivrstate_queue_drops_total",
        "ivrstate_clients_connected",
        "ivrstate_store_bytes",
        "ivrstate_commit_seconds_count",
        "ivrstate_commit_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(before.contains_key(name), "{name} missing: {before:?}");
    }
    assert_eq!(before["ivrstate_events_ingested_total"], 0.0);
    assert_eq!(before["ivrstate_messages_sent_total"], 0.0);

    // A client of IVR_1 logs in: the per-IVR gauge counts it.
    let mut client = Gli::connect(gli);
    wait_for("login Status='OK'", || {
        let resp = client.login("1", "IVR_1", "4.0", false);
        (attr(&resp, "Status").as_deref() == Some("OK")).then_some(())
    });
    wait_for("the logged-in gauge", || {
        (scrape(metrics).get("ivrstate_clients_logged_in{ivr=\"IVR_1\"}") == Some(&1.0))
            .then_some(())
    });

    // Feed the sample log: the counters reach what the plain ingest counted.
    let mut stream = TcpStream::connect(feed).unwrap();
    stream
        .write_all(&std::fs::read(example("ts_sip.log")).unwrap())
        .unwrap();
    let appended = expected["appended"].as_f64().unwrap();
    let after = wait_for("the appended counter to reach the log's events", || {
        let m = scrape(metrics);
        (m["ivrstate_events_appended_total"] == appended).then_some(m)
    });
    assert_eq!(
        after["ivrstate_events_ingested_total"],
        expected["read"].as_f64().unwrap()
    );
    assert_eq!(
        after["ivrstate_events_duplicate_total"],
        expected["duplicates"].as_f64().unwrap()
    );
    assert_eq!(
        after["ivrstate_input_skipped_total"],
        expected["skipped"].as_f64().unwrap()
    );
    assert!(after["ivrstate_commit_seconds_count"] >= 1.0);
    assert_eq!(
        after["ivrstate_commit_seconds_bucket{le=\"+Inf\"}"],
        after["ivrstate_commit_seconds_count"]
    );
    assert!(after["ivrstate_commit_seconds_sum"] > 0.0);
    assert!(after["ivrstate_store_bytes"] > 0.0);
    // The client of IVR_1 was told about its ports' agents.
    client.recv_until("<Agent");
    assert!(
        after["ivrstate_messages_sent_total"] > 0.0 || {
            scrape(metrics)["ivrstate_messages_sent_total"] > 0.0
        }
    );
    // Close our side and read the acknowledgements to the end, so the server sees a clean close.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut acks = String::new();
    let _ = stream.read_to_string(&mut acks);
    assert!(acks.contains("committed"), "{acks}");
    assert!(serve.terminate().success());
}

// ---- the README ----

/// The commands of the README's ```sh blocks, in order: one per line, `\` continuations
/// joined, comments dropped. Blocks with another info string (```sh-live for servers and
/// long-running commands, ```text for output) are shown to people but not run here.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            if in_sh {
                in_sh = false;
            } else {
                in_sh = info == "sh";
            }
            continue;
        }
        if !in_sh || trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            pending.push_str(start);
            continue;
        }
        pending.push_str(trimmed);
        commands.push(std::mem::take(&mut pending));
    }
    commands
}

#[test]
fn readme_commands_work_as_printed() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let commands = readme_commands(&readme);
    assert!(commands.len() >= 15, "{commands:#?}");
    let first = &commands[0];
    assert!(
        first.starts_with("cargo run") && first.contains("examples/") && first.contains("&&"),
        "the README starts with the one command a new user runs: {first}"
    );
    assert!(
        readme.contains("```sh-live\ncargo test --workspace --locked\n```"),
        "the second command is the test command"
    );

    // A fresh directory with a copy of examples/, and `ivrstate` on the PATH.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let work = dir.join("work");
    copy_dir(&examples(), &work.join("examples"));
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ivrstate"), bin_dir.join("ivrstate")).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cargo_run = CARGO_RUN;
    for command in &commands {
        let command = command.replace(cargo_run, "ivrstate");
        assert!(
            !command.contains("cargo "),
            "only `{cargo_run}` is substituted: {command}"
        );
        let started = Instant::now();
        let mut child = Command::new("sh")
            .args(["-ec", &command])
            .current_dir(&work)
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .env_remove("IVRSTATE_DB")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Drain both pipes while waiting so a chatty command never blocks.
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let _ = out.read_to_end(&mut o);
            let _ = err.read_to_end(&mut e);
            (o, e)
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("README command ran over {DEADLINE:?}: {command}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let (stdout, stderr) = reader.join().unwrap();
        assert!(
            status.success(),
            "README command failed ({status}): {command}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    }
}

/// The prefix the README uses to run the binary from a fresh clone; replaced by `ivrstate`.
const CARGO_RUN: &str = "cargo run -q --release -p ivrstate --";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
