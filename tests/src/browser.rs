//! Chromium driven over WebDriver (chromedriver's HTTP JSON protocol, spoken with [`crate::http`])
//! for the wallboard's browser test and the benchmark's `wallboard` scenario. Chromium runs
//! headless with the flags a closed network and root need, and a fresh profile.

use crate::http::request;
use crate::wait_for;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver and its browser session; the session is deleted (closing Chromium) and
/// chromedriver killed by PID when dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a window of `width` x `height`; `Err` says why it cannot (not
    /// installed).
    pub fn start(width: u32, height: u32) -> Result<Browser, String> {
        let (Some(chromedriver), Some(chromium)) = (which("chromedriver"), which("chromium"))
        else {
            return Err("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)".into());
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for chromedriver: {e}"))?
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
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
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser.profile.path().display()),
        ])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["sessionId"].as_str().unwrap_or_default().to_owned();
        Ok(browser)
    }

    /// [`Browser::start`] for a test: where Chromium is not installed, says so and gives None
    /// (the test passes), except under CI (`CI` set), where a missing browser is a failure.
    pub fn start_or_skip() -> Option<Browser> {
        match Browser::start(1400, 900) {
            Ok(browser) => Some(browser),
            Err(why) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set but the browser cannot run (.ci/run installs it): {why}"
                );
                println!("skipped: {why}");
                None
            }
        }
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

    /// Loads `url`.
    pub fn go(&self, url: &str) {
        self.session("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page; its `return` value.
    pub fn js(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Runs `script` in the page; the value it passes to `done` (a function in scope).
    pub fn js_async(&self, script: &str) -> Value {
        let script = format!("const done = arguments[arguments.length - 1];\n{script}");
        self.session(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The browser console's entries since the last call.
    pub fn console(&self) -> Vec<Value> {
        self.session("POST", "/se/log", Some(json!({"type": "browser"})))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// CPU seconds (user and system) Chromium's processes have used so far: the browser, its
    /// renderer and its GPU process (those started with this browser's profile). Linux only;
    /// 0 elsewhere.
    pub fn cpu_seconds(&self) -> f64 {
        // /proc's times are in clock ticks: USER_HZ, 100 on every Linux architecture.
        const TICKS: f64 = 100.0;
        let mut ticks = 0u64;
        for pid in self.pids() {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // After the command name in parentheses: state is field 3, utime 14, stime 15.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            for i in [11, 12] {
                ticks += fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        ticks as f64 / TICKS
    }

    /// The PIDs of the processes started with this browser's profile.
    fn pids(&self) -> Vec<String> {
        let profile = format!("--user-data-dir={}", self.profile.path().display());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&profile) {
                if let Some(pid) = entry.file_name().to_str() {
                    pids.push(pid.to_owned());
                }
            }
        }
        pids
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        base64(
            self.session("GET", "/screenshot", None)
                .as_str()
                .unwrap_or_default(),
        )
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
        // Whatever Chromium processes still use this browser's profile (a session that failed
        // half-way), by PID.
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
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
