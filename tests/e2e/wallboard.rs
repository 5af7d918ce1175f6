//! The wallboard in a real browser: Chromium driven over WebDriver (`ivrstate_tests::browser`),
//! against the real binary. Where Chromium is not installed the test says why and passes,
//! except under CI (`CI` set), where a missing browser is a failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::browser::Browser;
use ivrstate_tests::http::{get, serve_http};
use ivrstate_tests::{agent_line, wait_for, Feed, Ivrstate};
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn the_wallboard_shows_the_store_and_follows_the_feed_live() {
    let Some(browser) = Browser::start_or_skip() else {
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
    let (mut serve, http) = serve_http(&t, &[]);
    let feed_addr = serve.addr("feed");
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
    let line = agent_line(
        77_000_001,
        &format!("\"{}\"", status["at"].as_str().unwrap()),
        target["dn"].as_str().unwrap(),
        target["agent_id"].as_str().unwrap_or("1001"),
        flip_to,
    );
    // Kept open to the end: a feed connection that closes records its T-Server's link as lost.
    let mut feed = Feed::connect(feed_addr);
    feed.send(&[line]);
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
