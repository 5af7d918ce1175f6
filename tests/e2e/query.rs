//! status, history, audit and config end to end, on simulated T-Server logs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::Ivrstate;
use serde_json::Value;

fn ivrstate() -> Ivrstate {
    Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"))
}

const CONFIG: &str = r#"
[server]
version = "8.5.000.01"

[[tserver]]
name = "TS_A"
switch = "SwitchA"

[[tserver]]
name = "TS_B"

[[ivr]]
name = "IVR_1"
tservers = ["TS_A"]
options = { Timeout = "30" }

[[ivr.port]]
num = "01"
dn = "7001"

[[ivr]]
name = "IVR_2"
tservers = ["TS_B"]

[[ivr.port]]
num = "01"
dn = "7001"
"#;

#[test]
fn config_apply_records_differences_only_and_rejects_bad_files() {
    let t = ivrstate();
    let path = t.path("ivr.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let first = t.ok(&["config", "apply", path.to_str().unwrap()]);
    assert!(first.contains("recorded"), "{first}");
    let seq_after_first = t.json(&["status", "--json"])["seq"].clone();
    let second = t.ok(&["config", "apply", path.to_str().unwrap()]);
    assert!(second.contains("nothing recorded"), "{second}");
    assert_eq!(
        t.json(&["status", "--json"])["seq"],
        seq_after_first,
        "the same file twice records nothing"
    );

    // What `config show` prints applies as no change.
    let shown = t.ok(&["config", "show"]);
    let shown_path = t.path("shown.toml");
    std::fs::write(&shown_path, shown).unwrap();
    assert!(t
        .ok(&["config", "apply", shown_path.to_str().unwrap()])
        .contains("nothing recorded"));

    // A bad file: one line naming file, line and field; nothing recorded.
    let bad = t.path("bad.toml");
    std::fs::write(
        &bad,
        CONFIG.replace("dn = \"7001\"\n\n[[ivr]]", "dn = 7001\n\n[[ivr]]"),
    )
    .unwrap();
    let out = t.run(&["config", "apply", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:19:"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(t.json(&["status", "--json"])["seq"], seq_after_first);

    // Removing a port is recorded and shows as Unavailable.
    let smaller = t.path("smaller.toml");
    let text = CONFIG.replace(
        "[[ivr.port]]\nnum = \"01\"\ndn = \"7001\"\n\n[[ivr]]",
        "[[ivr]]",
    );
    std::fs::write(&smaller, text).unwrap();
    assert!(t
        .ok(&["config", "apply", smaller.to_str().unwrap()])
        .contains("port IVR_1:01 removed"));
    let status = t.json(&["status", "--json"]);
    let ports = status["ports"].as_array().unwrap();
    let p = ports.iter().find(|p| p["ivr"] == "IVR_1");
    assert!(p.is_none_or(|p| p["status"] == "Unavailable"), "{status}");
}

#[test]
fn status_at_is_the_same_whichever_order_two_tservers_are_ingested() {
    let a = ivrstate();
    let b = ivrstate();
    let log_a = a.simulate_to(
        "a.log",
        &[
            "--tserver",
            "TS_A",
            "--agents",
            "30",
            "--events",
            "1500",
            "--seed",
            "1",
        ],
    );
    let log_b = a.simulate_to(
        "b.log",
        &[
            "--tserver",
            "TS_B",
            "--agents",
            "30",
            "--events",
            "1500",
            "--seed",
            "2",
        ],
    );
    a.ok(&["ingest", &log_a]);
    a.ok(&["ingest", &log_b]);
    b.ok(&["ingest", &log_b]);
    b.ok(&["ingest", &log_a]);
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("seq");
        v
    };
    let history = a.json(&["history", "--dn", "7001", "--tserver", "TS_A", "--json"]);
    let times: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["start"].as_str())
        .collect();
    assert!(times.len() > 3, "{history}");
    for at in times
        .iter()
        .step_by(times.len() / 4)
        .chain(["2015-08-17T08:00:00Z", "2015-08-17T10:03:00Z"].iter())
    {
        let sa = strip(a.json(&["status", "--at", at, "--json"]));
        let sb = strip(b.json(&["status", "--at", at, "--json"]));
        assert_eq!(sa, sb, "state at {at} depends on ingest order");
        assert!(!sa["agents"].as_array().unwrap().is_empty() || *at == "2015-08-17T08:00:00Z");
    }
    // And as-of at the newest time equals the current state.
    let now = a.json(&["status", "--json"]);
    let at = now["at"].as_str().unwrap().to_owned();
    let at_now = a.json(&["status", "--at", &at, "--json"]);
    assert_eq!(now["agents"], at_now["agents"]);
    assert_eq!(now["servers"], at_now["servers"]);
}

#[test]
fn status_at_seq_replays_the_log_prefix() {
    let t = ivrstate();
    let log = t.simulate_to(
        "ts.log",
        &["--agents", "10", "--events", "400", "--seed", "5"],
    );
    t.ok(&["ingest", &log]);
    let full = t.json(&["status", "--json"]);
    let last = full["seq"].as_u64().unwrap();
    assert_eq!(
        t.json(&["status", "--seq", &last.to_string(), "--json"]),
        full
    );
    let early = t.json(&["status", "--seq", "3", "--json"]);
    assert_eq!(early["seq"], 3);
    assert!(early["agents"].as_array().unwrap().len() <= 3, "{early}");
    let out = t.run(&["status", "--seq", &(last + 10).to_string()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn history_crosses_midnight_and_clips() {
    let t = ivrstate();
    let log = t.simulate_to(
        "ts.log",
        &[
            "--agents",
            "5",
            "--events",
            "3000",
            "--seed",
            "4",
            "--start",
            "2015-08-17T22:30:00Z",
        ],
    );
    t.ok(&["ingest", &log]);
    let all = t.json(&["history", "--dn", "7001", "--json"]);
    let intervals = all.as_array().unwrap();
    assert!(intervals.len() > 2, "{all}");
    let crossing = intervals.iter().find(|i| {
        i["start"].as_str().unwrap().starts_with("2015-08-17")
            && i["end"]
                .as_str()
                .is_some_and(|e| e.starts_with("2015-08-18"))
    });
    let crossing = crossing.unwrap_or_else(|| panic!("no interval crosses midnight: {all}"));
    // Durations come from the events' own times.
    let d = crossing["duration_s"].as_f64().unwrap();
    assert!(d > 0.0);
    // The last interval is open.
    assert!(intervals.last().unwrap()["end"].is_null());
    // Clipped to a window around midnight: every interval inside it.
    let clipped = t.json(&[
        "history",
        "--dn",
        "7001",
        "--from",
        "2015-08-17T23:59:00Z",
        "--to",
        "2015-08-18T00:01:00Z",
        "--json",
    ]);
    for i in clipped.as_array().unwrap() {
        assert!(i["start"].as_str().unwrap() >= "2015-08-17T23:59:00", "{i}");
        assert!(
            i["end"].as_str().unwrap() <= "2015-08-18T00:01:00.000000Z",
            "{i}"
        );
    }
    // The same intervals by agent id: the agent on 7001 is 1001 in the simulator.
    let by_agent = t.json(&["history", "--agent", "1001", "--json"]);
    assert!(!by_agent.as_array().unwrap().is_empty());
    for i in by_agent.as_array().unwrap() {
        assert_eq!(i["agent_id"], "1001");
    }
    let csv = t.ok(&["history", "--agent", "1001", "--csv"]);
    assert_eq!(
        csv.lines().count(),
        by_agent.as_array().unwrap().len() + 1,
        "{csv}"
    );
}

#[test]
fn audit_adds_up_per_agent() {
    let t = ivrstate();
    let log = t.simulate_to(
        "ts.log",
        &["--agents", "20", "--events", "4000", "--seed", "6"],
    );
    t.ok(&["ingest", &log]);
    let (from, to) = ("2015-08-17T09:00:00Z", "2015-08-17T10:00:00Z");
    let audit = t.json(&["audit", "--from", from, "--to", to, "--json"]);
    let rows = audit.as_array().unwrap();
    assert!(!rows.is_empty(), "{audit}");
    for row in rows {
        let s = &row["status_s"];
        let sum: f64 = ["LoggedIn", "Ready", "NotReady", "LoggedOut"]
            .iter()
            .map(|k| s[k].as_f64().unwrap())
            .sum();
        assert!(sum <= 3600.0 + 1e-6, "{row}");
        let by_reason: f64 = row["not_ready_reason_s"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!(
            (by_reason - s["NotReady"].as_f64().unwrap()).abs() < 1e-3,
            "{row}"
        );
    }
    assert!(
        rows.iter().any(|r| r["logins"].as_u64().unwrap() > 0),
        "{audit}"
    );
    let table = t.ok(&["audit", "--from", from, "--to", to]);
    assert!(
        table.lines().next().unwrap().starts_with("AGENT"),
        "{table}"
    );
    let csv = t.ok(&["audit", "--from", from, "--to", to, "--csv"]);
    assert_eq!(csv.lines().count(), rows.len() + 1);
}

#[test]
fn audit_by_interval_adds_up_to_the_plain_audit_and_sessions_list_logins() {
    let t = ivrstate();
    let log = t.simulate_to("ts.log", &["--agents", "4", "--events", "600"]);
    t.ok(&["ingest", "--tserver", "TS_SIP", &log]);
    let window = [
        "--from",
        "2015-08-17T08:00:00Z",
        "--to",
        "2015-08-17T14:00:00Z",
    ];
    let mut args = vec!["audit", "--json"];
    args.extend(window);
    let plain = t.json(&args);
    args.extend(["--interval", "15m", "--tz", "+05:30"]);
    let rows = t.json(&args);
    let rows = rows.as_array().unwrap();
    // 6 hours: 24 quarter hours per agent at most, aligned at :00/:15/:30/:45 local.
    assert!(rows.len() > 24, "{}", rows.len());
    for agent in plain.as_array().unwrap() {
        let id = &agent["agent_id"];
        let mine: Vec<&Value> = rows.iter().filter(|r| &r["agent_id"] == id).collect();
        let sum = |f: &dyn Fn(&Value) -> f64| mine.iter().map(|r| f(r)).sum::<f64>();
        for status in ["LoggedIn", "Ready", "NotReady", "LoggedOut"] {
            let want = agent["status_s"][status].as_f64().unwrap();
            let got = sum(&|r| r["status_s"][status].as_f64().unwrap());
            assert!((want - got).abs() < 1e-3, "{id} {status}: {want} vs {got}");
        }
        assert_eq!(
            sum(&|r| r["logins"].as_f64().unwrap()),
            agent["logins"].as_f64().unwrap()
        );
        for r in &mine {
            let start = r["interval_start"].as_str().unwrap();
            assert!(
                start.contains(":00:00")
                    || start.contains(":15:00")
                    || start.contains(":30:00")
                    || start.contains(":45:00"),
                "{start}"
            );
        }
    }
    let csv = t.ok(&[
        "audit",
        "--interval",
        "1h",
        "--csv",
        window[0],
        window[1],
        window[2],
        window[3],
    ]);
    assert!(
        csv.starts_with("interval_start,interval_end,agent_id,logins,logged_in_s,"),
        "{csv}"
    );
    let sessions = t.json(&[
        "audit",
        "--sessions",
        "--json",
        window[0],
        window[1],
        window[2],
        window[3],
    ]);
    let sessions = sessions.as_array().unwrap();
    assert!(!sessions.is_empty());
    for s in sessions {
        let d = s["duration_s"].as_f64().unwrap();
        let parts = s["ready_s"].as_f64().unwrap() + s["not_ready_s"].as_f64().unwrap();
        assert!(parts <= d + 1e-3, "{s}");
        assert_eq!(s["tserver"], "TS_SIP");
    }
    let bad = t.run(&["audit", "--interval", "7m"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("15m, 30m, 1h or 1d"));
}
