//! Output for people and scripts: aligned tables, CSV, times in UTC or a zone.

use ivrstate_model::{Micros, Zone};
use std::io::IsTerminal;
use std::sync::OnceLock;

/// How times are shown in tables: UTC (default), a fixed offset (`--tz +02:00`), a named zone
/// with its DST rules (`--tz Europe/Berlin`) or the system's (`--tz local`). The zone itself is
/// the model's [`Zone`] (one parser for every zone and offset); this is a copyable handle to it.
#[derive(Clone, Copy, Debug)]
pub struct Tz(&'static Zone);

impl Default for Tz {
    fn default() -> Self {
        static UTC: OnceLock<Zone> = OnceLock::new();
        Tz(UTC.get_or_init(Zone::utc))
    }
}

impl Tz {
    pub fn parse(s: &str) -> Result<Tz, String> {
        let zone = Zone::parse(s).map_err(|e| format!("--tz: {e}"))?;
        // Parsed once per command: kept for the process's life, so the handle can be Copy.
        Ok(Tz(Box::leak(Box::new(zone))))
    }

    /// `t` moved by the offset in force then: its fields read as local wall-clock time.
    pub fn local(self, t: Micros) -> Micros {
        self.0.local(t)
    }

    /// The zone for aligning report intervals (a named zone's days are 23 or 25 h at DST).
    pub fn zone(self) -> jiff::tz::TimeZone {
        self.0.time_zone().clone()
    }

    /// `UTC`, `+02:00` or `Europe/Berlin`, for titles.
    pub fn name(self) -> String {
        self.0.name().to_owned()
    }

    /// `2015-08-17 23:16:17.458` in this zone, with the offset in force then (`Z` in UTC).
    pub fn format(self, t: Micros) -> String {
        let local = self.0.to_civil(t);
        let zone = self.0.suffix(t);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}{zone}",
            local.year,
            local.month,
            local.day,
            local.hour,
            local.minute,
            local.second,
            local.micros / 1000
        )
    }
}

/// Colours only on a terminal and never with NO_COLOR.
pub fn use_colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// Wraps `text` in an ANSI colour when colours are on.
pub fn paint(text: &str, colour: u8, on: bool) -> String {
    if on {
        format!("\x1b[{colour}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// A table: a header row and rows, printed with columns padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(visible_len(cell));
                }
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let mut parts = Vec::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(visible_len(cell));
                parts.push(format!("{cell}{}", " ".repeat(pad)));
            }
            out.push_str(parts.join("  ").trim_end());
            out.push('\n');
        };
        line(&self.header, &mut out);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&rule, &mut out);
        for row in &self.rows {
            line(row, &mut out);
        }
        out
    }

    /// RFC 4180 CSV: the header then the rows; fields with commas, quotes or newlines quoted.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let cells: Vec<String> = row.iter().map(|c| csv_field(c)).collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Length without ANSI colour sequences.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tz_formats_utc_and_offsets() {
        let t = Micros::parse("2015-08-17T23:16:17.458658Z").unwrap();
        assert_eq!(Tz::default().format(t), "2015-08-17 23:16:17.458Z");
        assert_eq!(
            Tz::parse("+02:00").unwrap().format(t),
            "2015-08-18 01:16:17.458+02:00"
        );
        assert_eq!(
            Tz::parse("-0530").unwrap().format(t),
            "2015-08-17 17:46:17.458-05:30"
        );
        assert!(Tz::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn tz_follows_a_named_zones_dst() {
        let berlin = Tz::parse("Europe/Berlin").unwrap();
        let summer = Micros::parse("2015-08-17T23:16:17.458658Z").unwrap();
        let winter = Micros::parse("2015-12-17T23:16:17.458658Z").unwrap();
        assert_eq!(berlin.format(summer), "2015-08-18 01:16:17.458+02:00");
        assert_eq!(berlin.format(winter), "2015-12-18 00:16:17.458+01:00");
        assert_eq!(berlin.name(), "Europe/Berlin");
        assert!(Tz::parse("local").is_ok());
    }

    #[test]
    fn tables_align_and_csv_quotes() {
        let mut t = Table::new(&["a", "bb"]);
        t.row(vec!["xxx".into(), "y".into()]);
        t.row(vec!["\x1b[32mz\x1b[0m".into(), "q,\"r\"".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "a    bb");
        assert_eq!(lines[2], "xxx  y");
        assert!(lines[3].starts_with("\x1b[32mz\x1b[0m    q"));
        assert_eq!(
            t.csv().lines().nth(2),
            Some("\u{1b}[32mz\u{1b}[0m,\"q,\"\"r\"\"\"")
        );
    }
}
