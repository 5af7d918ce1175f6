//! `status`, `history`, `audit` and `config`: questions about the state, now or at any moment.

use crate::output::{paint, use_colour, Table, Tz};
use crate::{now, open_engine, parse_time, DurabilityArg};
use anyhow::{Context, Result};
use clap::Args;
use ivrstate_engine::{HistorySelector, StatusView};
use ivrstate_model::{
    AgentId, AgentStatus, Availability, Dn, IvrName, Micros, PortNum, Seq, TServerName,
};
use ivrstate_projection::{AgentAudit, Interval, IntervalRow, LoginSession, Step};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct StatusArgs {
    /// The state at this event time (RFC 3339 or epoch seconds).
    #[arg(long, value_parser = parse_time, conflicts_with = "seq", value_name = "TIME")]
    at: Option<Micros>,
    /// The state right after this record of the log.
    #[arg(long, value_name = "N")]
    seq: Option<Seq>,
    /// One JSON object on stdout (docs/interface.md `status --json`).
    #[arg(long)]
    json: bool,
    /// Show times in a fixed offset, e.g. `+02:00` (default UTC).
    #[arg(long, value_parser = Tz::parse, default_value = "UTC")]
    tz: Tz,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["agent", "dn", "port"])))]
pub struct HistoryArgs {
    /// The agent's login id.
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    /// A DN (with `--tserver` when several T-Servers have it).
    #[arg(long, value_name = "DN")]
    dn: Option<String>,
    /// Restrict `--dn` to one T-Server.
    #[arg(long, requires = "dn", value_name = "NAME")]
    tserver: Option<String>,
    /// An IVR port as IVR:PORT, mapped to its DN through the current configuration.
    #[arg(long, value_name = "IVR:PORT")]
    port: Option<String>,
    #[command(flatten)]
    window: Window,
    #[command(flatten)]
    format: TableFormat,
    /// Also draw the intervals as an SVG timeline into FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    window: Window,
    /// Per agent per wall-clock interval (15m, 30m, 1h or 1d), aligned in the `--tz` zone.
    #[arg(long, value_name = "STEP", conflicts_with_all = ["sessions", "svg"])]
    interval: Option<Step>,
    /// One row per login session: agent, T-Server, DN, login, logout, time Ready/NotReady.
    #[arg(long, conflicts_with = "svg")]
    sessions: bool,
    #[command(flatten)]
    format: TableFormat,
    /// Also draw every agent's timeline as an SVG into FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(Args)]
pub struct Window {
    /// Start of the window (RFC 3339 or epoch seconds).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    from: Option<Micros>,
    /// End of the window.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    to: Option<Micros>,
}

#[derive(Args)]
pub struct TableFormat {
    /// JSON on stdout.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV on stdout.
    #[arg(long)]
    csv: bool,
    /// Show times in a fixed offset, e.g. `+02:00` (default UTC).
    #[arg(long, value_parser = Tz::parse, default_value = "UTC")]
    tz: Tz,
}

impl Window {
    fn check(&self) -> Result<()> {
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                return Err(crate::usage(format!(
                    "--from {from} is after --to {to}: swap them, or leave one out for an open window"
                )));
            }
        }
        Ok(())
    }
}

pub fn status(db: &Path, args: StatusArgs) -> Result<ExitCode> {
    let engine = open_engine(db, DurabilityArg::Full)?;
    let view = match (args.at, args.seq) {
        (Some(at), _) => engine.status_at(at)?,
        (None, Some(seq)) => {
            let last = engine.log().last_seq();
            if seq > last {
                // Exit 1, not 2: the flag is well formed, the store just ends earlier.
                anyhow::bail!(
                    "--seq {seq} is beyond the end of the log in {} (last seq {last}): give a seq from 1 to {last}",
                    db.display()
                );
            }
            engine.status_at_seq(seq)?
        }
        (None, None) => engine.status(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", render_status(&view, args.tz, use_colour()));
        if view.seq == 0 {
            // A new user's first `status` on an empty store: say what to do next.
            eprintln!(
                "the store {} is empty: record a configuration with `ivrstate config apply FILE` \
                 and events with `ivrstate ingest FILE`",
                db.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn agent_colour(status: AgentStatus) -> u8 {
    match status {
        AgentStatus::Ready => 32,
        AgentStatus::NotReady => 33,
        AgentStatus::LoggedIn => 36,
        AgentStatus::LoggedOut | AgentStatus::Unknown => 90,
    }
}

fn availability_colour(a: Availability) -> u8 {
    match a {
        Availability::Ok => 32,
        Availability::Unavailable => 31,
    }
}

pub fn render_status(view: &StatusView, tz: Tz, colour: bool) -> String {
    let mut out = String::new();
    let at = view.at.map_or_else(|| "-".to_owned(), |t| tz.format(t));
    out.push_str(&format!("state at {at} (seq {})\n\n", view.seq));
    let mut servers = Table::new(&["T-SERVER", "SWITCH", "STATUS", "SINCE"]);
    for s in &view.servers {
        servers.row(vec![
            s.name.clone(),
            s.switch.clone().unwrap_or_default(),
            paint(s.status.as_str(), availability_colour(s.status), colour),
            tz.format(s.since),
        ]);
    }
    let mut ports = Table::new(&["IVR", "PORT", "T-SERVER", "DN", "PORT STATUS", "AGENT"]);
    for p in &view.ports {
        ports.row(vec![
            p.ivr.clone(),
            p.port.clone(),
            p.tserver.clone(),
            p.dn.clone(),
            paint(p.status.as_str(), availability_colour(p.status), colour),
            paint(
                p.agent_status.as_str(),
                agent_colour(p.agent_status),
                colour,
            ),
        ]);
    }
    let mut agents = Table::new(&[
        "T-SERVER",
        "DN",
        "AGENT",
        "STATUS",
        "WORK MODE",
        "REASON",
        "SINCE",
    ]);
    for a in &view.agents {
        agents.row(vec![
            a.tserver.clone(),
            a.dn.clone(),
            a.agent_id.clone().unwrap_or_default(),
            paint(a.status.as_str(), agent_colour(a.status), colour),
            a.work_mode.clone().unwrap_or_default(),
            a.reason.clone().unwrap_or_default(),
            tz.format(a.since),
        ]);
    }
    // How many agents are in each state, so the answer to "how many are Ready" needs no
    // counting by eye.
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for a in &view.agents {
        *counts.entry(a.status.as_str()).or_default() += 1;
    }
    let agents_title = if counts.is_empty() {
        "Agents".to_owned()
    } else {
        let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        format!("Agents ({}: {})", view.agents.len(), parts.join(", "))
    };
    let titles = [
        (format!("Servers ({})", view.servers.len()), servers),
        (format!("Ports ({})", view.ports.len()), ports),
        (agents_title, agents),
    ];
    for (title, table) in titles {
        out.push_str(&format!("{title}:\n"));
        if table.is_empty() {
            out.push_str("  (none)\n\n");
        } else {
            out.push_str(&table.render());
            out.push('\n');
        }
    }
    out
}

pub fn history(db: &Path, args: HistoryArgs) -> Result<ExitCode> {
    args.window.check()?;
    let selector = if let Some(agent) = &args.agent {
        HistorySelector::Agent(AgentId::from(agent.as_str()))
    } else if let Some(dn) = &args.dn {
        HistorySelector::Dn {
            dn: Dn::from(dn.as_str()),
            tserver: args.tserver.as_deref().map(TServerName::from),
        }
    } else if let Some(port) = &args.port {
        let Some((ivr, port)) = port.split_once(':') else {
            return Err(crate::usage(format!(
                "--port {port:?}: expected IVR:PORT, e.g. --port IVR_1:01 (see `ivrstate config show` for the ports)"
            )));
        };
        HistorySelector::Port {
            ivr: IvrName::from(ivr),
            port: PortNum::from(port),
        }
    } else {
        return Err(crate::usage("one of --agent, --dn or --port is required"));
    };
    let engine = open_engine(db, DurabilityArg::Full)?;
    let intervals = engine.history(&selector, args.window.from, args.window.to)?;
    if let Some(path) = &args.svg {
        write_svg(
            path,
            &intervals,
            args.window.from,
            args.window.to,
            args.format.tz,
        )?;
    }
    let tz = args.format.tz;
    let provenance = engine.log().provenance()?;
    if args.format.json {
        let sourced: Vec<ivrstate_engine::Sourced> = intervals
            .iter()
            .map(|interval| ivrstate_engine::Sourced {
                interval,
                source: provenance.source(interval.start_seq),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&sourced)?);
        return Ok(ExitCode::SUCCESS);
    }
    let table = interval_table(&intervals, tz, args.format.csv, &provenance);
    if args.format.csv {
        print!("{}", table.csv());
    } else if intervals.is_empty() {
        println!("no intervals for this selection in this window");
    } else {
        print!("{}", table.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn interval_table(
    intervals: &[Interval],
    tz: Tz,
    csv: bool,
    provenance: &ivrstate_store::Provenance,
) -> Table {
    let colour = !csv && use_colour();
    // CSV columns are named like the `--json` fields, so scripts can switch between them.
    let header: &[&str] = if csv {
        &[
            "agent_id",
            "tserver",
            "dn",
            "status",
            "work_mode",
            "reason",
            "start",
            "end",
            "duration_s",
            "start_seq",
            "end_seq",
            "source",
        ]
    } else {
        &[
            "AGENT",
            "T-SERVER",
            "DN",
            "STATUS",
            "WORK MODE",
            "REASON",
            "START",
            "END",
            "DURATION",
            "START SEQ",
            "END SEQ",
        ]
    };
    let mut table = Table::new(header);
    let time = |t: Micros| if csv { t.to_rfc3339() } else { tz.format(t) };
    for i in intervals {
        let mut row = vec![
            i.agent_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            i.tserver.to_string(),
            i.dn.to_string(),
            paint(i.status.as_str(), agent_colour(i.status), colour),
            i.work_mode.map(|m| m.name()).unwrap_or_default(),
            i.reason.clone().unwrap_or_default(),
            time(i.start),
            i.end
                .map(time)
                .unwrap_or_else(|| if csv { String::new() } else { "(open)".into() }),
            i.duration_s
                .map(|d| if csv { format!("{d:.3}") } else { hms(d) })
                .unwrap_or_default(),
            i.start_seq.to_string(),
            i.end_seq.map(|s| s.to_string()).unwrap_or_default(),
        ];
        if csv {
            row.push(provenance.source(i.start_seq).into_owned());
        }
        table.row(row);
    }
    table
}

pub fn audit(db: &Path, args: AuditArgs) -> Result<ExitCode> {
    args.window.check()?;
    let engine = open_engine(db, DurabilityArg::Full)?;
    if let Some(step) = args.interval {
        return audit_intervals(engine, &args, step);
    }
    if args.sessions {
        return audit_sessions(engine, &args);
    }
    let rows = engine.audit(args.window.from, args.window.to)?;
    if let Some(path) = &args.svg {
        let intervals = engine.history_all(args.window.from, args.window.to)?;
        write_svg(
            path,
            &intervals,
            args.window.from,
            args.window.to,
            args.format.tz,
        )?;
    }
    if args.format.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let table = audit_table(&rows, args.format.csv);
    if args.format.csv {
        print!("{}", table.csv());
    } else if rows.is_empty() {
        println!("no agent activity in this window");
    } else {
        print!("{}", table.render());
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_intervals(
    engine: &ivrstate_engine::Engine,
    args: &AuditArgs,
    step: Step,
) -> Result<ExitCode> {
    let tz = args.format.tz;
    let (buckets, rows) =
        engine.audit_intervals(args.window.from, args.window.to, step, &tz.zone())?;
    if args.format.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let csv = args.format.csv;
    let table = interval_report_table(&rows, tz, csv);
    if csv {
        print!("{}", table.csv());
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no agent activity in this window");
    } else {
        print!("{}", table.render());
    }
    // Say which intervals are not their nominal length, so a 23-hour day is not a surprise.
    for b in buckets.iter().filter(|b| b.note.is_some()) {
        println!(
            "note: the interval from {} to {} is a {}",
            tz.format(b.start),
            tz.format(b.end),
            b.note.as_deref().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The interval report: one row per agent per interval. CSV columns are named as the `--json`
/// fields (`status_s.Ready` flattened to `ready_s`), durations in seconds.
pub fn interval_report_table(rows: &[IntervalRow], tz: Tz, csv: bool) -> Table {
    let header: &[&str] = if csv {
        &[
            "interval_start",
            "interval_end",
            "agent_id",
            "logins",
            "logged_in_s",
            "ready_s",
            "not_ready_other_s",
            "after_call_work_s",
            "logged_out_s",
            "not_ready_by_reason_s",
            "not_ready_by_work_mode_s",
            "note",
        ]
    } else {
        &[
            "INTERVAL",
            "AGENT",
            "LOGINS",
            "LOGGED IN",
            "READY",
            "NOT READY (NOT ACW)",
            "ACW",
            "LOGGED OUT",
            "NOT READY BY REASON",
            "NOT READY BY WORK MODE",
        ]
    };
    let mut table = Table::new(header);
    let duration = |s: f64| if csv { format!("{s:.3}") } else { hms(s) };
    for r in rows {
        let a = &r.audit;
        let mut cells = if csv {
            vec![r.interval_start.to_rfc3339(), r.interval_end.to_rfc3339()]
        } else {
            vec![tz.format(r.interval_start)]
        };
        cells.extend([
            a.agent_id.to_string(),
            a.logins.to_string(),
            duration(r.logged_in_s),
            duration(a.status_s.ready),
            duration(r.not_ready_other_s()),
            duration(r.after_call_work_s),
            duration(a.status_s.logged_out),
            breakdown(&a.not_ready_reason_s, csv),
            breakdown(&a.not_ready_work_mode_s, csv),
        ]);
        if csv {
            cells.push(r.note.clone().unwrap_or_default());
        }
        table.row(cells);
    }
    table
}

fn audit_sessions(engine: &ivrstate_engine::Engine, args: &AuditArgs) -> Result<ExitCode> {
    let sessions = engine.sessions(args.window.from, args.window.to)?;
    if args.format.json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(ExitCode::SUCCESS);
    }
    let csv = args.format.csv;
    let table = sessions_table(&sessions, args.format.tz, csv);
    if csv {
        print!("{}", table.csv());
    } else if sessions.is_empty() {
        println!("no login sessions in this window");
    } else {
        print!("{}", table.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// Login sessions; CSV columns named as the `--json` fields.
pub fn sessions_table(sessions: &[LoginSession], tz: Tz, csv: bool) -> Table {
    let header: &[&str] = if csv {
        &[
            "agent_id",
            "tserver",
            "dn",
            "login",
            "logout",
            "duration_s",
            "ready_s",
            "not_ready_s",
            "after_call_work_s",
        ]
    } else {
        &[
            "AGENT",
            "T-SERVER",
            "DN",
            "LOGIN",
            "LOGOUT",
            "DURATION",
            "READY",
            "NOT READY",
            "ACW",
        ]
    };
    let mut table = Table::new(header);
    let time = |t: Micros| if csv { t.to_rfc3339() } else { tz.format(t) };
    let duration = |s: f64| if csv { format!("{s:.3}") } else { hms(s) };
    for s in sessions {
        table.row(vec![
            s.agent_id.to_string(),
            s.tserver.to_string(),
            s.dn.to_string(),
            time(s.login),
            s.logout
                .map(time)
                .unwrap_or_else(|| if csv { String::new() } else { "(open)".into() }),
            duration(s.duration_s),
            duration(s.ready_s),
            duration(s.not_ready_s),
            duration(s.after_call_work_s),
        ]);
    }
    table
}

/// `key=duration` pairs, space separated.
fn breakdown(pairs: &std::collections::BTreeMap<String, f64>, csv: bool) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", if csv { format!("{v:.3}") } else { hms(*v) }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The audit for people: durations as H:MM:SS; for scripts (`csv`): seconds, as `--json`.
fn audit_table(rows: &[AgentAudit], csv: bool) -> Table {
    let header: &[&str] = if csv {
        &[
            "agent_id",
            "logins",
            "logged_in_s",
            "ready_s",
            "not_ready_s",
            "logged_out_s",
            "not_ready_by_reason_s",
            "not_ready_by_work_mode_s",
        ]
    } else {
        &[
            "AGENT",
            "LOGINS",
            "LOGGED IN",
            "READY",
            "NOT READY",
            "LOGGED OUT",
            "NOT READY BY REASON",
            "NOT READY BY WORK MODE",
        ]
    };
    let mut table = Table::new(header);
    let duration = |s: f64| {
        if csv {
            format!("{s:.3}")
        } else {
            hms(s)
        }
    };
    for a in rows {
        table.row(vec![
            a.agent_id.to_string(),
            a.logins.to_string(),
            duration(a.status_s.logged_in),
            duration(a.status_s.ready),
            duration(a.status_s.not_ready),
            duration(a.status_s.logged_out),
            breakdown(&a.not_ready_reason_s, csv),
            breakdown(&a.not_ready_work_mode_s, csv),
        ]);
    }
    table
}

/// Seconds as `H:MM:SS` (hours unbounded), rounded to the second.
pub fn hms(secs: f64) -> String {
    let total = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60)
}

fn write_svg(
    path: &Path,
    intervals: &[Interval],
    from: Option<Micros>,
    to: Option<Micros>,
    tz: Tz,
) -> Result<()> {
    let svg = crate::svg::timeline(intervals, from, to, tz);
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

pub fn config_apply(
    db: &Path,
    file: &Path,
    effective: Option<Micros>,
    cluster: &crate::cluster::ClusterArgs,
) -> Result<ExitCode> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {name}"))?;
    let config = ivrstate_engine::config::parse(&text, &name)?;
    let source = format!("ivrstate config apply {name}");
    let events = match cluster.config()? {
        Some(cluster) => crate::cluster::publish_config(cluster, &config, effective, &source)?,
        None => {
            let engine = open_engine(db, DurabilityArg::Full)?;
            let events =
                engine.apply_config_from(&config, effective.unwrap_or_else(now), &source)?;
            crate::finish(engine)?;
            events
        }
    };
    if events.is_empty() {
        println!("configuration unchanged: nothing recorded");
    } else {
        println!("recorded {} configuration change(s):", events.len());
        for e in &events {
            println!("  {}", ivrstate_engine::config::describe(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn config_show(db: &Path, json: bool) -> Result<ExitCode> {
    let engine = open_engine(db, DurabilityArg::Full)?;
    let config = engine.stored_config();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&ivrstate_engine::config::to_json(config))?
        );
    } else {
        print!("{}", ivrstate_engine::config::to_toml(config));
    }
    Ok(ExitCode::SUCCESS)
}
