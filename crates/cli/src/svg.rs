//! Agent-state timelines as SVG: one row per agent, a coloured band per interval, reasons and
//! work modes written in the band when it is wide enough (and always in its tooltip), a time
//! axis above and below, and a legend. Plain text output, no dependency.

use ivrstate_model::{AgentStatus, Micros, WorkMode};
use ivrstate_projection::Interval;
use std::collections::BTreeMap;
use std::fmt::Write;

const LABEL_W: f64 = 170.0;
const PLOT_W: f64 = 1200.0;
const ROW_H: f64 = 18.0;
const TOP: f64 = 70.0;
const RIGHT_PAD: f64 = 20.0;

/// The band colour of a status; after-call work and walk-away get shades of their own so an
/// auditor can tell them from other NotReady time at a glance.
fn colour(status: AgentStatus, work_mode: Option<WorkMode>) -> &'static str {
    match (status, work_mode) {
        (AgentStatus::NotReady, Some(WorkMode::AfterCallWork)) => "#ef6c00",
        (AgentStatus::NotReady, Some(WorkMode::WalkAway)) => "#8d6e63",
        (AgentStatus::NotReady, _) => "#fbc02d",
        (AgentStatus::Ready, _) => "#2e7d32",
        (AgentStatus::LoggedIn, _) => "#00acc1",
        (AgentStatus::LoggedOut, _) => "#e0e0e0",
        (AgentStatus::Unknown, _) => "#9e9e9e",
    }
}

const LEGEND: [(&str, AgentStatus, Option<WorkMode>); 7] = [
    ("Ready", AgentStatus::Ready, None),
    ("NotReady", AgentStatus::NotReady, None),
    (
        "NotReady (after-call work)",
        AgentStatus::NotReady,
        Some(WorkMode::AfterCallWork),
    ),
    (
        "NotReady (walk away)",
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

fn tick_label(t: Micros, step_us: i64) -> String {
    let c = t.to_civil();
    if step_us >= 86_400_000_000 {
        format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
    } else if c.hour == 0 && c.minute == 0 && c.second == 0 {
        format!("{:02}-{:02} 00:00", c.month, c.day)
    } else if step_us < 60_000_000 {
        format!("{:02}:{:02}:{:02}", c.hour, c.minute, c.second)
    } else {
        format!("{:02}:{:02}", c.hour, c.minute)
    }
}

/// Draws `intervals` between `from` and `to` (defaults: the earliest start and the latest end;
/// an open interval runs to the end of the picture).
pub fn timeline(intervals: &[Interval], from: Option<Micros>, to: Option<Micros>) -> String {
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
    let height = TOP + rows.len().max(1) as f64 * ROW_H + 50.0;
    let width = LABEL_W + PLOT_W + RIGHT_PAD;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="10" y="18" font-size="14" font-weight="bold">Agent states {} to {} (UTC)</text>"#,
        start, end
    );
    // Legend.
    let mut lx = 10.0;
    for (name, status, mode) in LEGEND {
        let _ = writeln!(
            svg,
            r##"<g class="legend"><rect x="{lx}" y="28" width="12" height="12" fill="{}" stroke="#555" stroke-width="0.5"/><text x="{}" y="38">{}</text></g>"##,
            colour(status, mode),
            lx + 16.0,
            escape(name)
        );
        lx += 30.0 + name.len() as f64 * 6.2;
    }
    // Axis: ticks and grid lines, labels above and below.
    let step = tick_step(end.0 - start.0);
    let mut t = Micros(start.0.div_euclid(step) * step);
    if t < start {
        t = Micros(t.0 + step);
    }
    let bottom = TOP + rows.len().max(1) as f64 * ROW_H;
    while t <= end {
        let tx = x(t);
        let label = tick_label(t, step);
        let _ = writeln!(
            svg,
            r##"<g class="tick"><line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{bottom}" stroke="#ccc" stroke-width="0.5"/><text x="{tx:.1}" y="{}" text-anchor="middle">{label}</text><text x="{tx:.1}" y="{}" text-anchor="middle">{label}</text></g>"##,
            TOP - 4.0,
            TOP - 8.0,
            bottom + 14.0
        );
        t = Micros(t.0 + step);
    }
    // Rows.
    for (n, (label, intervals)) in rows.iter().enumerate() {
        let y = TOP + n as f64 * ROW_H;
        let _ = writeln!(
            svg,
            r#"<g class="row" data-agent="{}"><text x="{}" y="{}" text-anchor="end">{}</text>"#,
            escape(label),
            LABEL_W - 6.0,
            y + ROW_H * 0.7,
            escape(label)
        );
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
                i.start,
                i.end.map_or_else(|| "now".to_owned(), |e| e.to_string())
            );
            let _ = writeln!(
                svg,
                r#"<rect class="band" data-status="{}" x="{x0:.2}" y="{}" width="{w:.2}" height="{}" fill="{}"><title>{}</title></rect>"#,
                i.status.as_str(),
                y + 2.0,
                ROW_H - 4.0,
                colour(i.status, i.work_mode),
                escape(&title)
            );
            let text = i.reason.clone().or_else(|| {
                i.work_mode
                    .filter(|m| i.status == AgentStatus::NotReady && *m != WorkMode::Unknown)
                    .map(|m| m.name())
            });
            if let Some(text) = text {
                if w > 6.5 * text.len() as f64 + 4.0 {
                    let _ = writeln!(
                        svg,
                        r#"<text class="label" x="{:.2}" y="{}" font-size="9">{}</text>"#,
                        x0 + 2.0,
                        y + ROW_H * 0.68,
                        escape(&text)
                    );
                }
            }
        }
        let _ = writeln!(svg, "</g>");
    }
    svg.push_str("</svg>\n");
    svg
}
