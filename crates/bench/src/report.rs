//! What a run reports: scenarios with named fields, the JSON object and the readable table
//! with the ratios against the baselines and the goals of issue 5.

use serde_json::{Map, Value};

/// One scenario's figures (the median over its runs), and what was counted.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: &'static str,
    pub fields: Vec<(&'static str, f64)>,
    /// A short note for the table (what is counted); not part of the JSON.
    pub note: String,
}

impl Scenario {
    pub fn get(&self, field: &str) -> Option<f64> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| *v)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub events: u64,
    pub scenarios: Vec<Scenario>,
}

impl Report {
    fn scenario(&self, name: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// `{"events": N, "scenarios": [{"name": ..., <fields>}, ...]}`.
    pub fn to_json(&self) -> Value {
        let scenarios = self
            .scenarios
            .iter()
            .map(|s| {
                let mut m = Map::new();
                m.insert("name".into(), Value::from(s.name));
                for (f, v) in &s.fields {
                    m.insert((*f).into(), number(*v));
                }
                Value::Object(m)
            })
            .collect::<Vec<_>>();
        serde_json::json!({ "events": self.events, "scenarios": scenarios })
    }

    /// Every goal with the measured value and whether it is met (None: not measured).
    pub fn goals(&self) -> Vec<(Goal, Option<f64>)> {
        GOALS
            .iter()
            .map(|g| (*g, g.value(self)))
            .collect::<Vec<_>>()
    }

    pub fn to_table(&self) -> String {
        let mut out = format!("ivrstate benchmark, {} events\n\n", self.events);
        out.push_str(&format!(
            "{:<16} {:<24} {:>14}  {}\n",
            "scenario", "field", "value", "counted"
        ));
        for s in &self.scenarios {
            for (i, (f, v)) in s.fields.iter().enumerate() {
                let note = if i == 0 { s.note.as_str() } else { "" };
                out.push_str(&format!(
                    "{:<16} {:<24} {:>14}  {}\n",
                    s.name,
                    f,
                    show(*v),
                    note
                ));
            }
        }
        out.push_str(&format!(
            "\n{:<44} {:>10} {:>10}  {}\n",
            "goal", "measured", "target", "met"
        ));
        for (g, v) in self.goals() {
            let (shown, met) = match v {
                Some(v) => (format!("{v:.2}"), if g.met(v) { "met" } else { "NOT met" }),
                None => ("-".to_owned(), "not measured"),
            };
            let target = format!("{} {}", if g.at_least { ">=" } else { "<=" }, g.target);
            out.push_str(&format!(
                "{:<44} {:>10} {:>10}  {met}\n",
                g.label, shown, target
            ));
        }
        out
    }
}

/// A goal of issue 5: either a ratio of two fields of one scenario, or one field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Goal {
    pub label: &'static str,
    pub scenario: &'static str,
    pub field: &'static str,
    /// Divide by this field of the same scenario (a ratio against a baseline).
    pub per: Option<&'static str>,
    pub at_least: bool,
    pub target: f64,
}

impl Goal {
    fn value(&self, r: &Report) -> Option<f64> {
        let s = r.scenario(self.scenario)?;
        let v = s.get(self.field)?;
        match self.per {
            Some(base) => Some(v / s.get(base)?),
            None => Some(v),
        }
    }

    pub fn met(&self, v: f64) -> bool {
        if self.at_least {
            v >= self.target
        } else {
            v <= self.target
        }
    }
}

const fn goal(
    label: &'static str,
    scenario: &'static str,
    field: &'static str,
    per: Option<&'static str>,
    at_least: bool,
    target: f64,
) -> Goal {
    Goal {
        label,
        scenario,
        field,
        per,
        at_least,
        target,
    }
}

pub const GOALS: [Goal; 15] = [
    goal(
        "durable ingest / SQLite (x)",
        "ingest_durable",
        "ivrstate",
        Some("sqlite"),
        true,
        2.0,
    ),
    goal(
        "durable ingest / raw file (x)",
        "ingest_durable",
        "ivrstate",
        Some("raw_file"),
        true,
        0.5,
    ),
    goal(
        "rebuild / SQLite (x)",
        "rebuild",
        "ivrstate",
        Some("sqlite"),
        true,
        2.0,
    ),
    goal(
        "rebuild / in-memory decode+fold (x)",
        "rebuild",
        "ivrstate",
        Some("in_memory"),
        true,
        0.6,
    ),
    goal(
        "AgentQuery p99 (us)",
        "agent_query",
        "p99_us",
        None,
        false,
        200.0,
    ),
    goal("fan-out p99 (ms)", "fanout", "p99_ms", None, false, 5.0),
    goal("as-of p99 (ms)", "as_of", "p99_ms", None, false, 10.0),
    goal(
        "bytes per event on disk",
        "storage",
        "bytes_per_event",
        None,
        false,
        40.0,
    ),
    goal(
        "T-Server log parsing (MB/s)",
        "tlog_parse",
        "mb_per_s",
        None,
        true,
        200.0,
    ),
    goal(
        "peak memory (MB)",
        "peak_rss_mb",
        "peak_rss_mb",
        None,
        false,
        150.0,
    ),
    goal(
        "end to end (events/s)",
        "end_to_end",
        "ivrstate",
        None,
        true,
        150_000.0,
    ),
    goal(
        "end to end / SQLite (x)",
        "end_to_end",
        "ivrstate",
        Some("sqlite"),
        true,
        2.0,
    ),
    goal(
        "end to end: bytes per event (whole store)",
        "end_to_end",
        "bytes_per_event",
        None,
        false,
        60.0,
    ),
    goal(
        "end to end: peak memory (MB)",
        "end_to_end",
        "peak_rss_mb",
        None,
        false,
        150.0,
    ),
    goal(
        "fan-out p99 / plain send loop (x)",
        "fanout",
        "p99_ms",
        Some("baseline_p99_ms"),
        false,
        1.3,
    ),
];

/// Integers stay integers in the JSON; others keep three decimals.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64((v * 1000.0).round() / 1000.0)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn show(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The median of the samples (the mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> f64 {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The nearest-rank percentile `p` (0..=100) of the samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = samples.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The per-field median of several runs of one scenario (every run reports the same fields).
pub fn median_fields(runs: &[Vec<(&'static str, f64)>]) -> Vec<(&'static str, f64)> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|(f, _)| {
            let samples: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.iter().find(|(g, _)| g == f).map(|(_, v)| *v))
                .collect();
            (*f, median(&samples))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn json_shape_and_goals() {
        let r = Report {
            events: 10,
            scenarios: vec![Scenario {
                name: "ingest_durable",
                fields: vec![("ivrstate", 4.0), ("sqlite", 1.0), ("raw_file", 10.0)],
                note: String::new(),
            }],
        };
        assert_eq!(
            r.to_json(),
            serde_json::json!({"events": 10, "scenarios": [
                {"name": "ingest_durable", "ivrstate": 4, "sqlite": 1, "raw_file": 10}]})
        );
        let goals = r.goals();
        assert_eq!(goals[0].1, Some(4.0));
        assert!(goals[0].0.met(4.0));
        assert_eq!(goals[1].1, Some(0.4));
        assert!(!goals[1].0.met(0.4));
        assert_eq!(goals[4].1, None);
    }
}
