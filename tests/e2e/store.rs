//! The store end to end: simulate -> ingest -> verify -> re-ingest -> export -> ingest again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::Ivrstate;

fn ivrstate() -> Ivrstate {
    Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"))
}

#[test]
fn ingest_is_idempotent_and_verifies() {
    let t = ivrstate();
    let log = t.simulate_to(
        "ts.log",
        &["--agents", "50", "--events", "3000", "--seed", "3"],
    );
    let first = t.json(&["ingest", "--json", &log]);
    let read = first["read"].as_u64().unwrap();
    assert!(read >= 3000, "{first}");
    assert_eq!(first["malformed"], 0, "{first}");
    // The simulator prints a few exact duplicates: they are read but not appended twice.
    let appended = first["appended"].as_u64().unwrap();
    let dups = first["duplicates"].as_u64().unwrap();
    assert!(
        dups > 0,
        "the simulated log has duplicate printouts: {first}"
    );
    assert_eq!(appended + dups, read, "{first}");
    assert!(
        first["skipped"].as_u64().unwrap() > 0,
        "stateless events are skipped: {first}"
    );

    let again = t.json(&["ingest", "--json", &log]);
    assert_eq!(again["appended"], 0, "{again}");
    assert_eq!(again["duplicates"], read, "{again}");

    let verify = t.json(&["verify", "--json"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["records"], appended, "{verify}");
    assert_eq!(verify["last_seq"], appended, "{verify}");
}

#[test]
fn export_then_ingest_gives_the_same_state() {
    let t = ivrstate();
    let log = t.simulate_to(
        "ts.log",
        &["--agents", "40", "--events", "2000", "--seed", "9"],
    );
    t.ok(&["ingest", &log]);
    let ndjson = t.ok(&["export"]);
    let path = t.path("export.ndjson");
    std::fs::write(&path, &ndjson).unwrap();

    let other = ivrstate();
    let summary = other.json(&["ingest", "--json", path.to_str().unwrap()]);
    assert_eq!(summary["malformed"], 0, "{summary}");
    assert_eq!(other.ok(&["status", "--json"]), t.ok(&["status", "--json"]));
    // The records are the same; where they came from is, truthfully, the export file now.
    let (sources, records): (Vec<String>, Vec<String>) = other
        .ok(&["export"])
        .lines()
        .map(|line| {
            let (record, source) = line.rsplit_once(",\"source\":").unwrap();
            (source.to_owned(), format!("{record}}}"))
        })
        .unzip();
    let original: Vec<String> = ndjson
        .lines()
        .map(|line| format!("{}}}", line.rsplit_once(",\"source\":").unwrap().0))
        .collect();
    assert_eq!(records, original, "export is stable through a round trip");
    // Each record names the line of the export file it was read from.
    let from: Vec<String> = (1..=sources.len())
        .map(|line| format!("\"file {}:{line}\"}}", path.display()))
        .collect();
    assert_eq!(sources, from);
    // And exporting again into the same store adds nothing.
    let again = other.json(&["ingest", "--json", path.to_str().unwrap()]);
    assert_eq!(again["appended"], 0, "{again}");
}

#[test]
fn stdin_and_malformed_printouts_are_located_and_the_rest_kept() {
    let t = ivrstate();
    let log = "\
@08:00:00.0000 [0] 8.1.101.33 distribute_event: message EventAgentLogin
\tAttributeEventSequenceNumber\t0000000000000001
\tAttributeTimeinuSecs\t0
\tAttributeTimeinSecs\t1439798400 (08:00:00)
\tAttributeThisDN\t'7001'
\tAttributeAgentID\t'1001'

@08:00:01.0000 [0] 8.1.101.33 distribute_event: message EventAgentReady
\tAttributeEventSequenceNumber\t0000000000000002
\tAttributeTimeinuSecs\t0
\tAttributeTimeinSecs\t1439798401 (08:00:01)
\tAttributeThisDN\t'7001
\tAttributeAgentID\t'1001'

@08:00:02.0000 [0] 8.1.101.33 distribute_event: message EventAgentNotReady
\tAttributeEventSequenceNumber\t0000000000000003
\tAttributeTimeinuSecs\t0
\tAttributeTimeinSecs\t1439798402 (08:00:02)
\tAttributeThisDN\t'7001'
\tAttributeAgentID\t'1001'
\tAttributeAgentWorkMode\t3 (AfterCallWork)
";
    let out = t.ok_with_stdin(
        &["ingest", "--json", "--tserver", "TS_SIP", "-"],
        log.as_bytes(),
    );
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["appended"], 2, "{summary}");
    assert_eq!(summary["malformed"], 1, "{summary}");
    let error = &summary["errors"][0];
    assert_eq!(error["file"], "-", "{summary}");
    assert_eq!(
        error["line"], 8,
        "the malformed printout starts at line 8: {summary}"
    );

    let status = t.json(&["status", "--json"]);
    let agent = &status["agents"][0];
    assert_eq!(agent["status"], "NotReady", "{status}");
    assert_eq!(agent["work_mode"], "AfterCallWork", "{status}");
}

#[test]
fn a_missing_tserver_name_is_a_clear_error() {
    let t = ivrstate();
    let log = "@08:00:00.0000 [0] distribute_event: message EventAgentLogin\n\tAttributeThisDN\t'7001'\n\tAttributeTimeinSecs\t1439798400\n";
    let out = t.ok_with_stdin(&["ingest", "--json", "-"], log.as_bytes());
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["appended"], 0, "{summary}");
    assert_eq!(summary["malformed"], 1, "{summary}");
    assert!(
        summary["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("--tserver"),
        "{summary}"
    );
}

#[test]
fn unreadable_inputs_and_stores_fail_with_one_line() {
    let t = ivrstate();
    let out = t.run(&["ingest", "/nonexistent/ts.log"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/ts.log"), "{stderr}");

    // A directory that is not a store.
    let foreign = t.path("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("conf"), b"\x00\x01garbage").unwrap();
    std::fs::write(foreign.join("db"), b"not a sled database at all").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ivrstate"))
        .args(["--db", foreign.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = t.run(&["status", "--at", "yesterday"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad flag value is a usage error"
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    use std::io::Read;
    let t = ivrstate();
    let log = t.simulate_to(
        "ts.log",
        &["--agents", "50", "--events", "20000", "--seed", "2"],
    );
    t.ok(&["ingest", &log]);
    let mut child = t
        .command()
        .arg("export")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 100];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take()); // like `| head -c 100`
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn ingest_follow_reads_each_event_once_and_keeps_following() {
    use std::io::{BufRead, BufReader, Write};
    let t = ivrstate();
    let first = t.ok(&["simulate", "--agents", "5", "--events", "50", "--seed", "1"]);
    let more = t.ok(&["simulate", "--agents", "5", "--events", "80", "--seed", "9"]);
    let log = t.path("ts.log");
    std::fs::write(&log, &first).unwrap();
    let mut child = t
        .command()
        .args(["-v", "ingest", "--follow", "--json", log.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // The deadline: if the expected lines never come, the process is killed and the reads below
    // hit end of file, failing the test instead of hanging it.
    let pid = child.id().to_string();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::spawn({
        let (pid, finished) = (pid.clone(), finished.clone());
        move || {
            std::thread::sleep(ivrstate_tests::DEADLINE);
            // Only while it is still ours: once waited for, the pid may belong to another.
            if !finished.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .status();
            }
        }
    });
    let mut wait_for_read = |n: u64| loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "ingest --follow ended early"
        );
        if line.contains("followed") && line.contains(&format!("read={n} ")) {
            return;
        }
    };
    wait_for_read(50);
    // Appended later (without the header the simulator writes first) is followed too.
    let body: String = more.lines().skip(6).map(|l| format!("{l}\n")).collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    wait_for_read(130);
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["read"], 130, "each event read once: {summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert_eq!(summary["appended"], 130, "{summary}");
    // Each record names the followed file and the line its printout starts at.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let prefix = format!("file {} (followed):", log.display());
    let mut previous = 0;
    for record in t.ok(&["export"]).lines() {
        let record: serde_json::Value = serde_json::from_str(record).unwrap();
        let source = record["source"].as_str().unwrap();
        let line: usize = source.strip_prefix(&prefix).unwrap().parse().unwrap();
        assert!(
            lines[line - 1].starts_with('@'),
            "{source}: {}",
            lines[line - 1]
        );
        assert!(line > previous, "{source} after line {previous}");
        previous = line;
    }
}
