//! The wallboard in a real browser: Chromium driven over WebDriver (chromedriver's HTTP JSON
//! protocol, spoken with the tests' own small HTTP client), against the real binary. Where
//! Chromium is not installed the test says why and passes, except under CI (`CI` set), where a
//! missing browser is a failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::http::{get, request};
use ivrstate_tests::{wait_for, Ivrstate};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver and its browser session; the session is deleted (closing Chromium) and
/// chromedriver killed by PID when dropped.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Option<Browser> {
        let (Some(chromedriver), Some(chromium)) = (which("chromedriver"), which("chromium"))
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but chromium/chromedriver are not installed (.ci/run installs them)"
            );
            println!("skipped: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        wait_for("chromedriver to listen", || {
            TcpStream::connect(addr).ok().map(|_| ())
        });
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,900",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        )])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["sessionId"].as_str().unwrap().to_owned();
        Some(browser)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = request(
            self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        let v = r.json();
        assert_eq!(r.status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.session("POST", "/url", Some(json!({ "url": url })));
    }

    fn js(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn console(&self) -> Vec<Value> {
        self.session("POST", "/se/log", Some(json!({"type": "browser"})))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn screenshot(&self) -> Vec<u8> {
        base64(self.session("GET", "/screenshot", None).as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = request(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                b"",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Whatever Chromium processes still use this test's profile (a session that failed
        // half-way), by PID.
        let profile = format!("--user-data-dir={}", self._profile.path().display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&profile) {
                if let Some(pid) = entry.file_name().to_str() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
    }
}

fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn agent_line(source_seq: u64, time: &str, dn: &str, agent: &str, kind: &str) -> String {
    let work_mode = if kind == "NotReady" {
        "\"AuxWork\""
    } else {
        "\"ManualIn\""
    };
    format!(
        r#"{{"time":"{time}","recorded":"{time}","event":{{"TLib":{{"tserver":"TS_SIP","source_seq":{source_seq},"kind":{{"Agent":{{"kind":"{kind}","dn":"{dn}","agent_id":"{agent}","queue":null,"work_mode":{work_mode},"reasons":[],"extensions":[]}}}}}}}}}}"#
    )
}

#[test]
fn the_wallboard_shows_the_store_and_follows_the_feed_live() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let t = Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"));
    let config = ivrstate_tests::repo_root().join("examples/ivr.toml");
    t.ok(&[
        "config",
        "apply",
        "--effective",
        "2015-08-17T00:00:00Z",
        config.to_str().unwrap(),
    ]);
    let log = t.path("ts.log");
    std::fs::write(
        &log,
        t.ok(&["simulate", "--agents", "40", "--events", "4000"]),
    )
    .unwrap();
    t.ok(&["ingest", "--tserver", "TS_SIP", log.to_str().unwrap()]);
    let mut serve = t.spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--feed-listen",
        "127.0.0.1:0",
    ]);
    let http = serve.addr("http");
    let feed_addr = serve.addr("feed");
    wait_for("readyz", || {
        (get(http, "/readyz").status == 200).then_some(())
    });
    let status = get(http, "/api/v1/status").json();
    let agents = status["agents"].as_array().unwrap().clone();

    // The page loads and shows every agent of the store.
    browser.go(&format!("http://{http}/"));
    wait_for("a tile per agent", || {
        let n = browser
            .js("return document.querySelectorAll('.tile').length")
            .as_u64();
        (n == Some(agents.len() as u64)).then_some(())
    });
    wait_for("the live stream", || {
        (browser.js("return document.getElementById('live').textContent") == "live").then_some(())
    });
    let tile_status = |key: &str| {
        browser.js(&format!(
            "const t = document.querySelector('.tile[data-key=\"{key}\"]'); return t && t.dataset.status"
        ))
    };
    for a in &agents {
        let key = format!(
            "{}/{}",
            a["tserver"].as_str().unwrap(),
            a["dn"].as_str().unwrap()
        );
        assert_eq!(tile_status(&key), a["status"], "{key}");
    }

    // An event written to the feed flips its tile within a second, without a reload.
    browser.js("window.notReloaded = true; return 1");
    let target = &agents[0];
    let key = format!(
        "{}/{}",
        target["tserver"].as_str().unwrap(),
        target["dn"].as_str().unwrap()
    );
    let flip_to = if target["status"] == "Ready" {
        "NotReady"
    } else {
        "Ready"
    };
    let mut stream = TcpStream::connect(feed_addr).unwrap();
    let mut acks = BufReader::new(stream.try_clone().unwrap());
    let line = agent_line(
        77_000_001,
        status["at"].as_str().unwrap(),
        target["dn"].as_str().unwrap(),
        target["agent_id"].as_str().unwrap_or("1001"),
        flip_to,
    );
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut ack = String::new();
    acks.read_line(&mut ack).unwrap();
    assert_eq!(ack.trim(), r#"{"committed":1}"#);
    let stored = Instant::now();
    loop {
        if tile_status(&key) == flip_to {
            break;
        }
        assert!(
            stored.elapsed() < Duration::from_secs(1),
            "the tile {key} did not turn {flip_to} within 1 s of the event being stored"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(browser.js("return window.notReloaded === true"), true);

    // A filter narrows the tiles to the agents in that state.
    let ready = browser.js(
        "const s = document.getElementById('f-state'); s.value = 'Ready'; s.dispatchEvent(new Event('change'));\
         return [document.querySelectorAll('.tile:not([hidden])').length, document.querySelectorAll('.tile[data-status=Ready]').length]",
    );
    assert_eq!(ready[0], ready[1], "{ready}");
    assert!(ready[0].as_u64().unwrap() < agents.len() as u64);
    let text = browser.js(
        "const s = document.getElementById('f-state'); s.value = ''; s.dispatchEvent(new Event('change'));\
         const f = document.getElementById('f-text'); f.value = '1007'; f.dispatchEvent(new Event('input'));\
         return document.querySelectorAll('.tile:not([hidden])').length",
    );
    assert_eq!(text, 1);
    browser.js("const f = document.getElementById('f-text'); f.value = ''; f.dispatchEvent(new Event('input')); return 1");

    // The audit page loads an interval report.
    browser.js("document.getElementById('tab-audit').click(); document.getElementById('a-load').click(); return 1");
    wait_for("the interval report", || {
        let rows = browser
            .js("return document.querySelectorAll('#a-table tr').length")
            .as_u64()?;
        (rows > 1).then_some(())
    });
    browser.js("document.getElementById('tab-agents').click(); return 1");

    if let Some(path) = std::env::var_os("IVRSTATE_WALLBOARD_SCREENSHOT") {
        std::fs::write(path, browser.screenshot()).unwrap();
    } else {
        let png = browser.screenshot();
        assert_eq!(&png[1..4], b"PNG");
    }

    // No errors in the browser's console.
    let severe: Vec<Value> = browser
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
}
