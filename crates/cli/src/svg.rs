//! Agent-state timelines as SVG: one row per agent, a coloured band per interval, reasons (and
//! work modes that have no colour of their own) written in the band when it is wide enough and
//! always in its tooltip, a time axis above and below and again every [`GROUP`] rows, a legend.
//! Plain text output, no dependency.
//!
//! Built for a day of a few hundred agents: rows are thin but shaded alternately so the eye can
//! follow one across, and the time axis is repeated so it is never far away.

use crate::output::Tz;
use ivrstate_model::{AgentStatus, Micros, WorkMode};
use ivrstate_projection::Interval;
use std::collections::BTreeMap;
use std::fmt::Write;

const LABEL_W: f64 = 130.0;
const PLOT_W: f64 = 1400.0;
const ROW_H: f64 = 16.0;
/// Height of the repeated time axis between groups of rows.
const AXIS_H: f64 = 18.0;
/// Rows between two time axes.
const GROUP: usize = 25;
const TOP: f64 = 76.0;
const RIGHT_PAD: f64 = 20.0;
/// Rough width of one character at the label font size (9px sans-serif), to decide whether a
/// label fits its band.
const CHAR_W: f64 = 5.4;

/// The band colour of a status; after-call work and walk-away get shades of their own so an
/// auditor can tell them from other NotReady time at a glance.
fn colour(status: AgentStatus, work_mode: Option<WorkMode>) -> &'static str {
    match (status, work_mode) {
        (AgentStatus::NotReady, Some(WorkMode::AfterCallWork)) => "#ef6c00",
        (AgentStatus::NotReady, Some(WorkMode::WalkAway)) => "#6d4c41",
        (AgentStatus::NotReady, _) => "#fbc02d",
        (AgentStatus::Ready, _) => "#2e7d32",
        (AgentStatus::LoggedIn, _) => "#00acc1",
        (AgentStatus::LoggedOut, _) => "#d6d6d6",
        (AgentStatus::Unknown, _) => "#9e9e9e",
    }
}

/// Text colour that reads on a band of that colour.
fn text_colour(status: AgentStatus, work_mode: Option<WorkMode>) -> &'static str {
    match (status, work_mode) {
        (AgentStatus::NotReady, Some(WorkMode::AfterCallWork | WorkMode::WalkAway))
        | (AgentStatus::Ready, _) => "white",
        _ => "#222",
    }
}

const LEGEND: [(&str, AgentStatus, Option<WorkMode>); 7] = [
    ("Ready", AgentStatus::Ready, None),
    ("NotReady", AgentStatus::NotReady, None),
    (
        "NotReady: after-call work",
        AgentStatus::NotReady,
        Some(WorkMode::AfterCallWork),
    ),
    (
        "NotReady: walk away",
        AgentStatus::NotReady,
        Some(WorkMode::WalkAway),
    ),
    ("LoggedIn", AgentStatus::LoggedIn, None),
    ("LoggedOut", AgentStatus::LoggedOut, None),
    ("Unknown", AgentStatus::Unknown, None),
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The row an interval belongs to: its agent, or its DN when no agent is known.
fn row_label(i: &Interval) -> String {
    match &i.agent_id {
        Some(id) => format!("agent {id}"),
        None => format!("{} / {}", i.tserver, i.dn),
    }
}

/// Tick spacing so that the axis carries between 4 and about 12 labels.
fn tick_step(span_us: i64) -> i64 {
    const STEPS_S: [i64; 12] = [
        1,
        5,
        15,
        60,
        300,
        900,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86_400,
    ];
    let span_s = (span_us / 1_000_000).max(1);
    for step in STEPS_S {
        if span_s / step <= 12 {
            return step * 1_000_000;
        }
    }
    let days = span_s / 86_400 / 12 + 1;
    days * 86_400 * 1_000_000
}

/// A tick's label in local wall-clock time (`local` already shifted by the zone).
fn tick_label(local: Micros, step_us: i64) -> String {
    let c = local.to_civil();
    if step_us >= 86_400_000_000 {
        format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
    } else if c.hour == 0 && c.minute == 0 && c.second == 0 {
        format!("{:02}-{:02}", c.month, c.day)
    } else if step_us < 60_000_000 {
        format!("{:02}:{:02}:{:02}", c.hour, c.minute, c.second)
    } else {
        format!("{:02}:{:02}", c.hour, c.minute)
    }
}

/// `2015-08-17 08:00` (seconds only when they are not zero).
fn short_time(t: Micros, tz: Tz) -> String {
    let c = tz.local(t).to_civil();
    let mut s = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute
    );
    if c.second != 0 {
        let _ = write!(s, ":{:02}", c.second);
    }
    s
}

/// Draws `intervals` between `from` and `to` (defaults: the earliest start and the latest end;
/// an open interval runs to the end of the picture), times shown in `tz`.
pub fn timeline(
    intervals: &[Interval],
    from: Option<Micros>,
    to: Option<Micros>,
    tz: Tz,
) -> String {
    let start = from
        .or_else(|| intervals.iter().map(|i| i.start).min())
        .unwrap_or_default();
    let end = to
        .or_else(|| intervals.iter().map(|i| i.end.unwrap_or(i.start)).max())
        .unwrap_or(start)
        .max(Micros(start.0 + 1_000_000));
    let span = (end.0 - start.0) as f64;
    let x = |t: Micros| LABEL_W + ((t.0 - start.0) as f64 / span).clamp(0.0, 1.0) * PLOT_W;

    let mut rows: BTreeMap<String, Vec<&Interval>> = BTreeMap::new();
    for i in intervals {
        rows.entry(row_label(i)).or_default().push(i);
    }
    let n_rows = rows.len().max(1);
    // Row n sits below the axes of the groups before it.
    let row_y = |n: usize| TOP + n as f64 * ROW_H + (n / GROUP) as f64 * AXIS_H;
    let bottom = row_y(n_rows - 1) + ROW_H;
    let height = bottom + 40.0;
    let width = LABEL_W + PLOT_W + RIGHT_PAD;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let agents = rows.len();
    let what = if intervals.iter().all(|i| i.agent_id.is_some()) {
        "agent"
    } else {
        "row"
    };
    let _ = writeln!(
        svg,
        r#"<text class="title" x="10" y="20" font-size="15" font-weight="bold">Agent states, {} to {} {} ({agents} {what}{}, {} interval{})</text>"#,
        short_time(start, tz),
        short_time(end, tz),
        tz.name(),
        if agents == 1 { "" } else { "s" },
        intervals.len(),
        if intervals.len() == 1 { "" } else { "s" },
    );
    // Legend: evenly spaced by the estimated width of each name.
    let mut lx = 10.0;
    for (name, status, mode) in LEGEND {
        let _ = writeln!(
            svg,
            r##"<g class="legend"><rect x="{lx}" y="32" width="14" height="12" fill="{}" stroke="#555" stroke-width="0.5"/><text x="{}" y="42">{}</text></g>"##,
            colour(status, mode),
            lx + 19.0,
            escape(name)
        );
        lx += 19.0 + name.len() as f64 * 6.4 + 18.0;
    }
    let _ = writeln!(
        svg,
        r##"<text x="{lx}" y="42" fill="#666">white: no data. Reasons are written in the band; hover a band for details.</text>"##
    );

    // Axis: grid lines over the whole plot, labels above, below and between groups of rows.
    let step = tick_step(end.0 - start.0);
    let offset = tz.local(start).0 - start.0;
    // Ticks fall on round local times: round in local time, then shift back.
    let mut t = Micros((start.0 + offset).div_euclid(step) * step - offset);
    if t < start {
        t = Micros(t.0 + step);
    }
    let mut axis_rows: Vec<f64> = vec![TOP - 6.0];
    let mut g = GROUP;
    while g < n_rows {
        axis_rows.push(row_y(g) - 5.0);
        g += GROUP;
    }
    axis_rows.push(bottom + 14.0);
    while t <= end {
        let tx = x(t);
        let label = tick_label(tz.local(t), step);
        let _ = write!(
            svg,
            r##"<g class="tick"><line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{bottom}" stroke="#bbb" stroke-width="0.6"/>"##,
            TOP - 2.0
        );
        for y in &axis_rows {
            let _ = write!(
                svg,
                r##"<text x="{tx:.1}" y="{y}" text-anchor="middle" fill="#333">{label}</text>"##
            );
        }
        svg.push_str("</g>\n");
        t = Micros(t.0 + step);
    }
    // Rows.
    for (n, (label, intervals)) in rows.iter().enumerate() {
        let y = row_y(n);
        let _ = write!(
            svg,
            r#"<g class="row" data-agent="{}"><text x="{}" y="{}" text-anchor="end">{}</text>"#,
            escape(label),
            LABEL_W - 6.0,
            y + ROW_H * 0.72,
            escape(label)
        );
        if n % 2 == 1 {
            // Alternate shading so that a row can be followed across 1400 pixels.
            let _ = write!(
                svg,
                r##"<rect x="{LABEL_W}" y="{y}" width="{PLOT_W}" height="{ROW_H}" fill="#f3f3f3"/>"##
            );
        }
        svg.push('\n');
        for i in intervals {
            let x0 = x(i.start.max(start));
            let x1 = x(i.end.unwrap_or(end).min(end));
            let w = (x1 - x0).max(0.5);
            let detail: Vec<String> = [
                Some(i.status.as_str().to_owned()),
                i.work_mode.map(|m| m.name()),
                i.reason.clone(),
            ]
            .into_iter()
            .flatten()
            .collect();
            let title = format!(
                "{} on {}/{}: {} from {} to {}",
                label,
                i.tserver,
                i.dn,
                detail.join(", "),
                tz.format(i.start),
                i.end.map_or_else(|| "now".to_owned(), |e| tz.format(e))
            );
            let _ = writeln!(
                svg,
                r#"<rect class="band" data-status="{}" x="{x0:.2}" y="{}" width="{w:.2}" height="{}" fill="{}"><title>{}</title></rect>"#,
                i.status.as_str(),
                y + 1.5,
                ROW_H - 3.0,
                colour(i.status, i.work_mode),
                escape(&title)
            );
            if let Some(text) = band_label(i) {
                if w > CHAR_W * text.chars().count() as f64 + 4.0 {
                    let _ = writeln!(
                        svg,
                        r#"<text class="label" x="{:.2}" y="{}" font-size="9" fill="{}">{}</text>"#,
                        x0 + 2.0,
                        y + ROW_H * 0.7,
                        text_colour(i.status, i.work_mode),
                        escape(&text)
                    );
                }
            }
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>\n");
    svg
}

/// What is written in a band: the reason; else, for NotReady, a work mode that its colour does
/// not already say (AuxWork, NoCallDisconnect...).
fn band_label(i: &Interval) -> Option<String> {
    i.reason.clone().or_else(|| {
        i.work_mode
            .filter(|m| {
                i.status == AgentStatus::NotReady
                    && !matches!(
                        m,
                        WorkMode::Unknown | WorkMode::AfterCallWork | WorkMode::WalkAway
                    )
            })
            .map(|m| m.name())
    })
}
