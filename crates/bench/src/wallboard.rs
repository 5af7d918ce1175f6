//! `wallboard` (`--wallboard-only`, issue 15): the wallboard page in headless Chromium (the
//! browser test's WebDriver driver, `ivrstate_tests::browser`) against the real `ivrstate serve
//! --http` of a store of the simulator's `agents` agents, while `rate` agent state changes a
//! second are written to its feed for `seconds` seconds.
//!
//! - `lag_*_ms`: every second, the seq of the last change the server has (`/readyz`) is noted
//!   with the time; the page notes, frame by frame, when its `lastSeq` (moved when a batch of
//!   changes is applied) moved. The lag of a sample is how long after it the page applied that
//!   seq; the mean and the maximum over the first 10 s and the last 10 s (a page that does not
//!   keep up shows a lag that grows from one to the other).
//! - `filter_ms`: typing an agent id into the search box until the frame that shows only its
//!   tile is painted (mean of a few, while the changes flow).
//! - `longest_task_ms`, `long_tasks`: the main thread's tasks over 50 ms during the run, as
//!   Chromium's `PerformanceObserver` reports them (`longtask`).
//! - `browser_cpu_percent`: the CPU time of Chromium's processes (browser, renderer, GPU) during
//!   the run, per second, in percent of one core: what the page costs, whatever else the
//!   machine is doing (the timings above stretch with the machine's load);
//!   `browser_idle_cpu_percent` the same over 5 s without changes before.
//! - `changes_per_s`: the rate achieved (each batch waits for the feed's acknowledgement).

use anyhow::{anyhow, bail, Result};
use ivrstate_tests::browser::Browser;
use ivrstate_tests::http::{get, serve_http};
use ivrstate_tests::{agent_line, wait_for, Feed, Ivrstate, Rng};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The measured figures.
pub struct Figures {
    pub agents: usize,
    pub changes: u64,
    pub changes_per_s: f64,
    pub lag_first_mean: f64,
    pub lag_first_max: f64,
    pub lag_last_mean: f64,
    pub lag_last_max: f64,
    pub filter_ms: f64,
    pub longest_task_ms: f64,
    pub long_tasks: f64,
    /// Chromium's CPU time during the run per second of it, in percent of one core.
    pub browser_cpu_percent: f64,
    /// The same for 5 s before, without changes (the page ticking its clocks).
    pub browser_idle_cpu_percent: f64,
}

/// Changes written to the feed per write (the feed acknowledges each write).
const PER_WRITE: u32 = 10;

/// Runs the scenario with the `ivrstate` binary `bin`. `Ok(Err(why))` when no browser can run.
pub fn run(
    bin: &Path,
    agents: usize,
    rate: u32,
    seconds: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<std::result::Result<Figures, String>> {
    if seconds < 20 {
        bail!("--wallboard-seconds must be at least 20 (the first and the last 10 s are compared)");
    }
    let browser = match Browser::start(1920, 1080) {
        Ok(browser) => browser,
        Err(why) => return Ok(Err(why)),
    };
    let t = Ivrstate::new(
        bin.to_str()
            .ok_or_else(|| anyhow!("{}: not a UTF-8 path", bin.display()))?,
    );
    progress(&format!("simulating and ingesting {agents} agents"));
    let log = t.path("wallboard.log");
    let events = (agents * 20).to_string();
    std::fs::write(
        &log,
        t.ok(&[
            "simulate",
            "--agents",
            &agents.to_string(),
            "--events",
            &events,
        ]),
    )?;
    t.ok(&[
        "ingest",
        "--tserver",
        "TS_SIP",
        log.to_str().unwrap_or_default(),
    ]);
    let (mut serve, http) = serve_http(&t, &[]);
    let feed_addr = serve.addr("feed");
    let status = get(http, "/api/v1/status").json();
    let shown: Vec<(String, String)> = status["agents"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|a| Some((a["dn"].as_str()?.into(), a["agent_id"].as_str()?.into())))
                .collect()
        })
        .unwrap_or_default();
    if shown.len() < agents {
        bail!(
            "the store shows {} agents with an id, not {agents}",
            shown.len()
        );
    }
    let start_secs = status["at"]
        .as_str()
        .and_then(|at| ivrstate_model::Micros::parse(at).ok())
        .map(|at| at.0 / 1_000_000)
        .ok_or_else(|| anyhow!("the status has no time: {status}"))?;

    progress("loading the page");
    browser.go(&format!("http://{http}/"));
    wait_for("a tile per agent", || {
        let n = browser
            .js("return document.querySelectorAll('.tile').length")
            .as_u64()?;
        (n as usize >= shown.len()).then_some(())
    });
    wait_for("the live stream", || {
        (browser.js("return document.getElementById('live').textContent") == "live").then_some(())
    });
    // What the page applied when (a frame at a time), and its long tasks.
    browser.js(
        "window.benchLongTasks = [];\
         new PerformanceObserver((list) => { for (const e of list.getEntries()) window.benchLongTasks.push(e.duration); })\
           .observe({ type: 'longtask' });\
         window.benchApplied = [];\
         let seen = lastSeq;\
         (function record() {\
           if (lastSeq !== seen) { seen = lastSeq; window.benchApplied.push([Date.now(), lastSeq]); }\
           requestAnimationFrame(record);\
         })();\
         return 1",
    );

    progress("5 s without changes");
    let idle_from = (Instant::now(), browser.cpu_seconds());
    std::thread::sleep(Duration::from_secs(5));
    let idle_cpu = (browser.cpu_seconds() - idle_from.1) / idle_from.0.elapsed().as_secs_f64();

    progress(&format!("{rate} changes/s for {seconds} s"));
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let shown = shown.clone();
        std::thread::spawn(move || feed(feed_addr, &shown, start_secs, rate, &stop))
    };
    let started = Instant::now();
    let cpu_before = browser.cpu_seconds();
    // (seconds into the run, wall clock in ms, the server's last seq)
    let mut stored: Vec<(f64, f64, u64)> = Vec::new();
    let mut filters = Vec::new();
    let mut rng = Rng::new(15);
    for second in 1..=seconds {
        let tick = started + Duration::from_secs(second);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let server = get(http, "/readyz").json()["seq"].as_u64().unwrap_or(0);
        stored.push((started.elapsed().as_secs_f64(), unix_ms(), server));
        if second % 10 == 5 {
            let (_, agent) = &shown[rng.below(shown.len() as u64) as usize];
            filters.push(filter_ms(&browser, agent)?);
        }
    }
    let browser_cpu = (browser.cpu_seconds() - cpu_before) / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let (changes, fed_secs) = feeder
        .join()
        .map_err(|_| anyhow!("the feeding thread panicked"))?;
    // Everything fed reaches the page in the end.
    let last = get(http, "/readyz").json()["seq"].as_f64().unwrap_or(0.0);
    wait_for("the page to apply the last change", || {
        (browser.js("return lastSeq").as_f64()? >= last).then_some(())
    });
    let applied: Vec<(f64, u64)> = browser
        .js("return window.benchApplied")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| Some((e[0].as_f64()?, e[1].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    // For each sample: how long until the page painted the server's last change then.
    let lags: Vec<(f64, f64)> = stored
        .iter()
        .map(|(at, ms, seq)| {
            let painted = applied
                .iter()
                .find(|(_, s)| s >= seq)
                .map_or(f64::MAX, |(t, _)| *t);
            (*at, (painted - ms).max(0.0))
        })
        .collect();
    let long: Vec<f64> = browser
        .js("return window.benchLongTasks")
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let severe: Vec<Value> = browser
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    if !severe.is_empty() {
        bail!("errors in the page's console: {severe:?}");
    }
    drop(browser);
    serve.terminate();

    let window = |from: f64, to: f64| {
        let lag: Vec<f64> = lags
            .iter()
            .filter(|(t, _)| *t > from && *t <= to)
            .map(|(_, l)| *l)
            .collect();
        let mean = lag.iter().sum::<f64>() / lag.len().max(1) as f64;
        (mean, lag.iter().copied().fold(0.0, f64::max))
    };
    let total = seconds as f64;
    let (lag_first_mean, lag_first_max) = window(0.0, 10.0);
    let (lag_last_mean, lag_last_max) = window(total - 10.0, total + 1.0);
    Ok(Ok(Figures {
        agents: shown.len(),
        changes,
        changes_per_s: changes as f64 / fed_secs,
        lag_first_mean,
        lag_first_max,
        lag_last_mean,
        lag_last_max,
        filter_ms: filters.iter().sum::<f64>() / filters.len().max(1) as f64,
        longest_task_ms: long.iter().copied().fold(0.0, f64::max),
        long_tasks: long.len() as f64,
        browser_cpu_percent: browser_cpu * 100.0,
        browser_idle_cpu_percent: idle_cpu * 100.0,
    }))
}

/// The wall clock in milliseconds (the page's `Date.now()`).
fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Writes `rate` changes a second, `PER_WRITE` at a time, until `stop`: each change flips a
/// random agent between Ready and NotReady, one second of event time per second. The changes
/// written and the seconds it took.
fn feed(
    addr: std::net::SocketAddr,
    agents: &[(String, String)],
    start_secs: i64,
    rate: u32,
    stop: &AtomicBool,
) -> (u64, f64) {
    let mut feed = Feed::connect(addr);
    let mut rng = Rng::new(5000);
    let mut ready = vec![false; agents.len()];
    let every = Duration::from_secs_f64(f64::from(PER_WRITE) / f64::from(rate));
    let began = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let due = began + every.mul_f64((n / u64::from(PER_WRITE)) as f64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let time = (start_secs + began.elapsed().as_secs() as i64).to_string();
        let lines: Vec<String> = (0..PER_WRITE)
            .map(|_| {
                let i = rng.below(agents.len() as u64) as usize;
                ready[i] = !ready[i];
                n += 1;
                let (dn, agent) = &agents[i];
                let kind = if ready[i] { "Ready" } else { "NotReady" };
                agent_line(900_000_000 + n, &time, dn, agent, kind)
            })
            .collect();
        feed.send(&lines);
    }
    (n, began.elapsed().as_secs_f64())
}

/// Types `agent` into the search box; the milliseconds until the frame after the filter is
/// painted. Clears the box afterwards.
fn filter_ms(browser: &Browser, agent: &str) -> Result<f64> {
    let measured = browser.js_async(&format!(
        "const f = document.getElementById('f-text');\
         const t0 = performance.now();\
         f.value = '{agent}'; f.dispatchEvent(new Event('input'));\
         requestAnimationFrame(() => setTimeout(() => {{\
           const shown = document.querySelectorAll('.tile:not([hidden])').length;\
           done([performance.now() - t0, shown]);\
         }}, 0));"
    ));
    browser.js("const f = document.getElementById('f-text'); f.value = ''; f.dispatchEvent(new Event('input')); return 1");
    let ms = measured[0]
        .as_f64()
        .ok_or_else(|| anyhow!("filter timing: {measured}"))?;
    // The search matches inside ids and DNs too ("1001" is also in DN 11001).
    if measured[1].as_u64().is_none_or(|n| n == 0 || n > 50) {
        bail!("the filter for agent {agent} showed {} tiles", measured[1]);
    }
    Ok(ms)
}
