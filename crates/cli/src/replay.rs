//! `ivrstate replay`: re-emit what IVR clients were sent in a past window, as XML on stdout or
//! to GLI clients, at the original pace (scaled by `--speed`) or as fast as possible.

use crate::{open_engine, parse_time, DurabilityArg};
use anyhow::{Context, Result};
use clap::Args;
use ivrstate_model::{Micros, Record};
use ivrstate_projection::{Applied, Change};
use ivrstate_publisher::hub::{Hub, HubConfig};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
#[command(group(clap::ArgGroup::new("out").required(true).args(["xml", "listen"])))]
pub struct ReplayArgs {
    /// Start of the window (the clients start from the state at this moment).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    from: Option<Micros>,
    /// End of the window.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    to: Option<Micros>,
    /// Pace: 1 is real time, 60 a minute per second.
    #[arg(long, default_value_t = 1.0, conflicts_with = "max")]
    speed: f64,
    /// As fast as possible.
    #[arg(long)]
    max: bool,
    /// Print one GctiMsg per line on stdout, preceded on the same line by a comment with the
    /// time and the IVR it was sent to.
    #[arg(long)]
    xml: bool,
    /// Serve GLI clients on ADDR; the replay starts when the first client has logged in.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// Only the pushes for this IVR.
    #[arg(long, value_name = "NAME")]
    ivr: Option<String>,
}

pub fn run(db: &Path, args: ReplayArgs) -> Result<ExitCode> {
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        return Err(crate::usage(format!(
            "--speed {}: must be a positive number (1 = real time, 60 = a minute per second), or use --max",
            args.speed
        )));
    }
    let engine = open_engine(db, DurabilityArg::Full)?;
    let window = engine.replay_window(args.from, args.to)?;
    let only = args.ivr.clone();
    let wanted = move |c: &Change| only.as_ref().is_none_or(|ivr| c.ivr.as_str() == ivr);
    let pace = Pace {
        speed: if args.max { None } else { Some(args.speed) },
        first: window.records.first().map(|r| r.envelope.time),
    };
    let mut applied = Applied::default();
    if args.xml {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let started = std::time::Instant::now();
        let mut state = window.start;
        let mut sent = 0;
        let bar = crate::progress::bar(window.records.len() as u64, "replay");
        for record in &window.records {
            bar.inc(1);
            applied.clear();
            state.apply(record, &mut applied);
            for change in applied.changes.iter().filter(|c| wanted(c)) {
                pace.wait_blocking(record.envelope.time, started);
                writeln!(out, "{}", xml_line(record, change))?;
                sent += 1;
            }
            if pace.speed.is_some() {
                out.flush()?;
            }
        }
        out.flush()?;
        bar.finish_and_clear();
        eprintln!(
            "replayed {sent} messages from {} records",
            window.records.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(listen) = args.listen else {
        return Err(crate::usage("one of --xml or --listen is required"));
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (--listen)"))?;
        println!("gli listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let hub = Hub::with_state(HubConfig::default(), window.start);
        hub.set_ready(true);
        let (requests, mut recorded) = tokio::sync::mpsc::channel(64);
        // A replay records nothing: requests are answered and dropped.
        tokio::spawn(async move { while recorded.recv().await.is_some() {} });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(ivrstate_publisher::server::serve(
            listener,
            hub.clone(),
            requests,
            async {
                let _ = stop_rx.await;
            },
        ));
        // Start when somebody is listening.
        while hub.metrics().logged_in.iter().all(|(_, n)| *n == 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = std::time::Instant::now();
        let mut sent = 0;
        let bar = crate::progress::bar(window.records.len() as u64, "replay");
        for record in &window.records {
            bar.inc(1);
            if let Some(delay) = pace.delay(record.envelope.time, started) {
                tokio::time::sleep(delay).await;
            }
            // The hub's state moves with the replay, so AgentQuery answers as it did then.
            hub.update(|state| {
                applied.clear();
                state.apply(record, &mut applied);
            });
            applied.changes.retain(|c| wanted(c));
            sent += applied.changes.len();
            hub.publish(&applied.changes);
        }
        bar.finish_and_clear();
        eprintln!(
            "replayed {sent} messages from {} records",
            window.records.len()
        );
        // Let the clients read what was queued, then close.
        while hub.metrics().logged_in.iter().any(|(_, n)| *n > 0)
            && started.elapsed() < Duration::from_secs(1)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(());
        let _ = server.await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// When each push is due: its offset from the first push, divided by the speed.
struct Pace {
    speed: Option<f64>,
    first: Option<Micros>,
}

impl Pace {
    fn delay(&self, at: Micros, started: std::time::Instant) -> Option<Duration> {
        let (speed, first) = (self.speed?, self.first?);
        let due = Duration::from_secs_f64(((at.0 - first.0).max(0) as f64 / 1e6) / speed);
        due.checked_sub(started.elapsed())
    }

    fn wait_blocking(&self, at: Micros, started: std::time::Instant) {
        if let Some(d) = self.delay(at, started) {
            std::thread::sleep(d);
        }
    }
}

fn xml_line(record: &Record, change: &Change) -> String {
    let body = ivrstate_publisher::xml::encode_monitor_info(None, &change.info);
    let body = String::from_utf8_lossy(&body);
    format!(
        "<!-- {} {} seq {} --><GctiMsg><CallId>replay</CallId>{body}</GctiMsg>",
        record.envelope.time, change.ivr, record.seq
    )
}
