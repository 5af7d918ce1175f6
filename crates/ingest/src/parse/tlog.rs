//! The T-Server log printout parser (docs/protocol.md section 6).
//!
//! [`TlogParser`] is the sans-IO core: it is pushed one line at a time and emits [`Parsed`]
//! items. A printout starts at an `@HH:MM:SS.ffff ... message EventName` line and runs over the
//! tab-indented `Attribute<Name>\t<value>` lines after it; it ends at a blank line or at a line
//! without leading whitespace, so its event is emitted when the line after it arrives (or at
//! [`TlogParser::finish`]). [`TlogReader`] drives the core from a `BufRead`.
//!
//! Speed matters (multi-GB logs, 200 MB/s goal): lines are classified by their first byte,
//! attribute names are compared as bytes, and only the values kept are allocated. Lines of
//! other kinds (Std/Int/Trc/Dbg records, log headers) are looked at only for what they say about
//! the date and the T-Server name.

use super::lines::{Line, LineReader};
use super::{ParseError, Parsed};
use ivrstate_model::{
    AddressInfo, AgentEvent, AgentEventKind, AgentId, CompactString, Dn, Envelope, Event, KvList,
    Micros, Queue, TLibEvent, TLibKind, TServerName, WorkMode, Zone,
};
use memchr::{memchr, memchr2, memmem, memrchr};
use std::collections::VecDeque;
use std::io::BufRead;

const DAY_US: i64 = 86_400_000_000;
const HALF_DAY_US: i64 = DAY_US / 2;
/// Most key-value pairs kept from one printout's lists: a printout with more is malformed, not
/// a memory hazard (real ones have a handful).
const MAX_PAIRS: usize = 1024;

/// A known civil date and time of day: the reference for the date-less `@` times.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    /// Midnight of the day, in microseconds since the epoch.
    day: i64,
    /// Time of day, microseconds since midnight.
    tod: i64,
}

impl Anchor {
    /// The day of a time of day seen after this anchor: a time more than 12 h earlier than the
    /// anchor's means midnight was crossed.
    fn day_after(self, tod: i64) -> i64 {
        if self.tod - tod > HALF_DAY_US {
            self.day + DAY_US
        } else {
            self.day
        }
    }

    /// The day of a time of day seen before this anchor (a printout whose date only the line
    /// after it gave): a time more than 12 h later than the anchor's is from the day before.
    fn day_before(self, tod: i64) -> i64 {
        if tod - self.tod > HALF_DAY_US {
            self.day - DAY_US
        } else {
            self.day
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Agent(AgentEventKind),
    AddressInfo,
    LinkConnected,
    LinkDisconnected,
}

impl Kind {
    fn from_name(name: &[u8]) -> Option<Kind> {
        Some(match name {
            b"EventAgentLogin" => Kind::Agent(AgentEventKind::Login),
            b"EventAgentLogout" => Kind::Agent(AgentEventKind::Logout),
            b"EventAgentReady" => Kind::Agent(AgentEventKind::Ready),
            b"EventAgentNotReady" => Kind::Agent(AgentEventKind::NotReady),
            b"EventAgentAfterCallWork" => Kind::Agent(AgentEventKind::AfterCallWork),
            b"EventAddressInfo" => Kind::AddressInfo,
            b"EventLinkConnected" => Kind::LinkConnected,
            b"EventLinkDisconnected" => Kind::LinkDisconnected,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Agent(k) => k.event_name(),
            Kind::AddressInfo => "EventAddressInfo",
            Kind::LinkConnected => "EventLinkConnected",
            Kind::LinkDisconnected => "EventLinkDisconnected",
        }
    }
}

/// Which key-value list the deeper-indented pair lines belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    None,
    Reasons,
    Extensions,
}

/// A state-carrying printout being read.
#[derive(Debug)]
struct Block {
    kind: Kind,
    line: u64,
    offset: u64,
    /// The `@` time of day.
    tod: i64,
    /// The `@` time with its date, when the date was known at the header.
    at: Option<Micros>,
    /// The first reason the printout is malformed; the rest of it is then only skipped over.
    error: Option<String>,
    seq: Option<u64>,
    secs: Option<i64>,
    usecs: Option<i64>,
    dn: Option<String>,
    agent_id: Option<String>,
    queue: Option<String>,
    work_mode: Option<WorkMode>,
    reasons: Vec<(CompactString, CompactString)>,
    extensions: Vec<(CompactString, CompactString)>,
    agent_status: Option<i64>,
    /// Indentation of the attribute lines (set by the first one); deeper lines are list pairs.
    base_indent: usize,
    list: List,
    /// Indentation of the current list's pairs; deeper lines are nested lists, ignored.
    pair_indent: usize,
}

impl Block {
    fn new(kind: Kind, line: u64, offset: u64, tod: i64, at: Option<Micros>) -> Self {
        Block {
            kind,
            line,
            offset,
            tod,
            at,
            error: None,
            seq: None,
            secs: None,
            usecs: None,
            dn: None,
            agent_id: None,
            queue: None,
            work_mode: None,
            reasons: Vec::new(),
            extensions: Vec::new(),
            agent_status: None,
            base_indent: 0,
            list: List::None,
            pair_indent: 0,
        }
    }

    fn fail(&mut self, reason: String) {
        if self.error.is_none() {
            self.error = Some(reason);
        }
    }

    /// One indented line of the printout (`indent` > 0 leading whitespace bytes, `body` the
    /// rest, not blank).
    fn attribute(&mut self, indent: usize, body: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.base_indent == 0 {
            self.base_indent = indent;
        }
        if indent > self.base_indent {
            self.pair(indent, body);
            return;
        }
        self.list = List::None;
        let (name, value) = split_name_value(body);
        let result = match name {
            b"AttributeEventSequenceNumber" => parse_hex(value).map(|v| self.seq = Some(v)),
            b"AttributeTimeinSecs" => parse_int(value).map(|v| self.secs = Some(v)),
            b"AttributeTimeinuSecs" => parse_int(value).and_then(|v| {
                if (0..1_000_000).contains(&v) {
                    self.usecs = Some(v);
                    Ok(())
                } else {
                    Err(format!("{v} is not a microsecond count"))
                }
            }),
            b"AttributeThisDN" => text(value).map(|v| self.dn = Some(v.to_owned())),
            b"AttributeAgentID" => text(value).map(|v| self.agent_id = Some(v.to_owned())),
            b"AttributeThisQueue" => text(value).map(|v| self.queue = Some(v.to_owned())),
            b"AttributeAgentWorkMode" => parse_work_mode(value).map(|v| self.work_mode = Some(v)),
            b"AttributeReasons" => {
                self.list = List::Reasons;
                self.pair_indent = 0;
                Ok(())
            }
            b"AttributeExtensions" => {
                self.list = List::Extensions;
                self.pair_indent = 0;
                Ok(())
            }
            // Other attributes are not kept, but a quote left open still means the printout
            // was cut or garbled, and nothing in it can be trusted.
            _ => match value.first() {
                Some(b'\'') => text(value).map(|_| ()),
                _ => Ok(()),
            },
        };
        if let Err(e) = result {
            self.fail(format!("{}: {e}", String::from_utf8_lossy(name)));
        }
    }

    /// A `'Key'\t'Value'` or `'Key'\tnumber` line of a key-value list.
    fn pair(&mut self, indent: usize, body: &[u8]) {
        if self.list == List::None {
            return;
        }
        if self.pair_indent == 0 {
            self.pair_indent = indent;
        }
        if indent > self.pair_indent {
            return;
        }
        match parse_pair(body) {
            Ok((k, v)) => {
                if self.list == List::Extensions && k == "AgentStatus" {
                    match v.trim().parse::<i64>() {
                        Ok(n) => self.agent_status = Some(n),
                        Err(_) => {
                            self.fail(format!("AgentStatus: {v:?} is not a number"));
                            return;
                        }
                    }
                }
                if self.reasons.len() + self.extensions.len() >= MAX_PAIRS {
                    self.fail(format!("more than {MAX_PAIRS} key-value pairs"));
                    return;
                }
                let kv = (CompactString::from(k), CompactString::from(v));
                match self.list {
                    List::Reasons => self.reasons.push(kv),
                    List::Extensions => self.extensions.push(kv),
                    List::None => {}
                }
            }
            Err(e) => {
                let list = match self.list {
                    List::Reasons => "AttributeReasons",
                    _ => "AttributeExtensions",
                };
                self.fail(format!("{list}: {e}"));
            }
        }
    }
}

/// The push core of the T-Server log parser; see the module documentation.
#[derive(Debug)]
pub struct TlogParser {
    file: String,
    /// `--tserver`: wins over the header.
    tserver: Option<TServerName>,
    /// From the last `Application name:` header line.
    header_tserver: Option<TServerName>,
    recorded: Micros,
    anchor: Option<Anchor>,
    block: Option<Block>,
    /// The date part of the last ISO-8601 line and its midnight: most lines repeat it.
    date_cache: Option<([u8; 10], i64)>,
    /// The log's clock, when it is not UTC; see [`TlogParser::clock`].
    clock: LogClock,
}

/// What the parser knows of the zone the log's `@` and ISO times are written in.
#[derive(Debug, Default)]
struct LogClock {
    /// `--log-tz`: wins over everything the log says.
    given: Option<Zone>,
    /// From the header: the `UTC time:`/`Local time:` pair (the offset in force when the file
    /// was opened, summer time included), else `Time zone:`.
    header: Option<Zone>,
    /// Whether the header's zone came from the pair (then `Time zone:` does not replace it).
    from_pair: bool,
    /// `UTC time:` and `Local time:` of the header, read as UTC.
    utc_time: Option<Micros>,
    local_time: Option<Micros>,
    /// The log says `time-convert = utc`: its times are UTC whatever the header's zone.
    utc_option: bool,
    /// A printout has been seen: the header and the option printouts are over.
    past_header: bool,
}

impl LogClock {
    /// The zone of the log's wall-clock times; `None`: UTC.
    fn zone(&self) -> Option<&Zone> {
        match &self.given {
            Some(z) => Some(z),
            None if self.utc_option => None,
            None => self.header.as_ref(),
        }
    }

    /// `Time zone:        -19800, <zone names>`: seconds west of UTC, as C's
    /// `timezone`.
    fn time_zone_line(&mut self, rest: &[u8]) {
        if self.from_pair {
            return;
        }
        let field = rest.split(|&b| b == b',').next().unwrap_or_default();
        let west = std::str::from_utf8(trim(field))
            .ok()
            .and_then(|s| s.parse::<i32>().ok());
        if let Some(zone) = west.and_then(|w| w.checked_neg()).and_then(Zone::fixed) {
            self.header = Some(zone);
        }
    }

    /// After `UTC time:` or `Local time:`: once both are known, their difference (to the
    /// minute) is the offset.
    fn pair(&mut self) {
        let (Some(utc), Some(local)) = (self.utc_time, self.local_time) else {
            return;
        };
        let minutes = (local.0 - utc.0) as f64 / 60e6;
        let east = (minutes.round() as i64).saturating_mul(60);
        if let Some(zone) = i32::try_from(east).ok().and_then(Zone::fixed) {
            self.header = Some(zone);
            self.from_pair = true;
        }
    }
}

impl TlogParser {
    /// `file` names the input in errors; `tserver` overrides the log header's
    /// `Application name:`; `recorded` is stamped on every envelope.
    pub fn new(file: &str, tserver: Option<TServerName>, recorded: Micros) -> Self {
        TlogParser {
            file: file.to_owned(),
            tserver,
            header_tserver: None,
            recorded,
            anchor: None,
            block: None,
            date_cache: None,
            clock: LogClock::default(),
        }
    }

    /// `--log-tz`: the zone the log's times are written in, whatever its header says (for logs
    /// without a header, or to give a named zone's summer-time rules).
    pub fn with_log_zone(mut self, zone: Option<Zone>) -> Self {
        self.clock.given = zone;
        self
    }

    /// The instant of a time the log wrote on its wall clock (an `@` or ISO time); times from
    /// `AttributeTimeinSecs` are instants already.
    fn to_utc(&self, wall: Micros) -> Micros {
        match self.clock.zone() {
            Some(zone) => zone.utc_of_local(wall),
            None => wall,
        }
    }

    /// The T-Server the events are attributed to, if known yet.
    pub fn tserver(&self) -> Option<&TServerName> {
        self.tserver.as_ref().or(self.header_tserver.as_ref())
    }

    /// Pushes one line (without its newline; a trailing `\r` is ignored). Items it completes
    /// are appended to `out`.
    pub fn push_line<E: Extend<Parsed>>(
        &mut self,
        line: &[u8],
        line_no: u64,
        byte_offset: u64,
        out: &mut E,
    ) {
        let line = match line.split_last() {
            Some((b'\r', rest)) => rest,
            _ => line,
        };
        match line.first() {
            None => self.end_block(out),
            Some(b' ' | b'\t') => {
                let indent = line
                    .iter()
                    .take_while(|b| matches!(b, b' ' | b'\t'))
                    .count();
                if indent == line.len() {
                    self.end_block(out);
                } else if let Some(block) = &mut self.block {
                    block.attribute(indent, &line[indent..]);
                }
            }
            Some(b'@') => {
                self.end_block(out);
                self.clock.past_header = true;
                self.header(line, line_no, byte_offset, out);
            }
            Some(b'0'..=b'9') => {
                // The date first: a printout without one takes it from the line after it.
                if let Some(anchor) = self.iso_time(line) {
                    self.anchor = Some(anchor);
                    if !self.clock.past_header {
                        self.time_convert_option(line);
                    }
                }
                self.end_block(out);
            }
            Some(_) => {
                self.end_block(out);
                self.log_header(line);
            }
        }
    }

    /// A line longer than the line cap (`prefix` is its start). If it is indented and inside a
    /// printout, that printout is malformed; otherwise the line is reported by itself.
    pub fn push_overlong<E: Extend<Parsed>>(
        &mut self,
        prefix: &[u8],
        line_no: u64,
        byte_offset: u64,
        out: &mut E,
    ) {
        let reason = format!("line {line_no} is longer than the line limit; skipped");
        if matches!(prefix.first(), Some(b' ' | b'\t')) {
            if let Some(block) = &mut self.block {
                block.fail(reason);
                return;
            }
        } else {
            self.end_block(out);
        }
        out.extend(Some(Parsed::Malformed(ParseError {
            file: self.file.clone(),
            line: line_no,
            byte_offset,
            reason,
        })));
    }

    /// Ends the printout in progress, if any (end of input, or a followed file was reset).
    pub fn finish<E: Extend<Parsed>>(&mut self, out: &mut E) {
        self.end_block(out);
    }

    /// An `@HH:MM:SS.ffff ...` line: moves the clock on and may start a printout.
    fn header<E: Extend<Parsed>>(&mut self, line: &[u8], line_no: u64, offset: u64, out: &mut E) {
        let Some((tod, rest)) = parse_tod(&line[1..]) else {
            return;
        };
        let at = self.anchor.map(|a| {
            let day = a.day_after(tod);
            self.anchor = Some(Anchor { day, tod });
            Micros(day + tod)
        });
        let Some(name) = message_name(rest) else {
            return;
        };
        match Kind::from_name(name) {
            Some(kind) => self.block = Some(Block::new(kind, line_no, offset, tod, at)),
            None => out.extend(Some(Parsed::Skipped {
                line: line_no,
                what: String::from_utf8_lossy(name).into_owned(),
            })),
        }
    }

    /// The lines of the log file header (labels padded with spaces or tabs): `Application
    /// name:`, `Local time:` (the date of the `@` times until an ISO line gives one), and the
    /// log's zone: `Time zone:` and the `UTC time:`/`Local time:` pair.
    fn log_header(&mut self, line: &[u8]) {
        if let Some(rest) = line.strip_prefix(b"Application name:") {
            if let Ok(name) = std::str::from_utf8(trim(rest)) {
                if !name.is_empty() {
                    self.header_tserver = Some(TServerName::from(name));
                }
            }
        } else if let Some(rest) = line.strip_prefix(b"Local time:") {
            if let Some(anchor) = self.iso_time(trim(rest)) {
                self.anchor = Some(anchor);
                self.clock.local_time = Some(Micros(anchor.day + anchor.tod));
                self.clock.pair();
            }
        } else if let Some(rest) = line.strip_prefix(b"UTC time:") {
            if let Some(anchor) = self.iso_time(trim(rest)) {
                self.clock.utc_time = Some(Micros(anchor.day + anchor.tod));
                self.clock.pair();
            }
        } else if let Some(rest) = line.strip_prefix(b"Time zone:") {
            self.clock.time_zone_line(rest);
        }
    }

    /// `... Option 'time-convert' has been set to the value 'utc'` among the option printouts
    /// after the header: the times are UTC, whatever the header's zone.
    fn time_convert_option(&mut self, line: &[u8]) {
        const OPTION: &[u8] = b"'time-convert' has been set to the value '";
        if let Some(i) = memmem::find(line, OPTION) {
            let value = line.get(i + OPTION.len()..).unwrap_or_default();
            self.clock.utc_option = value.starts_with(b"utc'");
        }
    }

    /// The date and time of a line starting `YYYY-MM-DDTHH:MM:SS[.fff]`.
    fn iso_time(&mut self, line: &[u8]) -> Option<Anchor> {
        let date: [u8; 10] = line.get(..10)?.try_into().ok()?;
        if !matches!(line.get(10), Some(b'T' | b' ')) {
            return None;
        }
        let day = match self.date_cache {
            Some((d, day)) if d == date => day,
            _ => {
                let s = std::str::from_utf8(&date).ok()?;
                if !s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                    return None;
                }
                let day = Micros::parse(s).ok()?.0;
                self.date_cache = Some((date, day));
                day
            }
        };
        let (tod, _) = parse_tod(&line[11..])?;
        Some(Anchor { day, tod })
    }

    fn end_block<E: Extend<Parsed>>(&mut self, out: &mut E) {
        let Some(block) = self.block.take() else {
            return;
        };
        let line = block.line;
        let item = match self.build(block) {
            Ok(envelope) => Parsed::Event { line, envelope },
            Err((block_line, offset, reason)) => Parsed::Malformed(ParseError {
                file: self.file.clone(),
                line: block_line,
                byte_offset: offset,
                reason,
            }),
        };
        out.extend(Some(item));
    }

    fn build(&self, b: Block) -> Result<Envelope, (u64, u64, String)> {
        let name = b.kind.name();
        let err = |reason: String| (b.line, b.offset, format!("{name}: {reason}"));
        if let Some(e) = &b.error {
            return Err(err(e.clone()));
        }
        let Some(tserver) = self.tserver().cloned() else {
            return Err(err(
                "no T-Server name: pass --tserver (the log has no 'Application name:' header)"
                    .into(),
            ));
        };
        let time = match (b.secs, b.at, self.anchor) {
            (Some(secs), _, _) => Micros::from_secs_micros(secs, b.usecs.unwrap_or(0)),
            (None, Some(at), _) => self.to_utc(at),
            // The date came only after the header (from the line that ended the printout).
            (None, None, Some(a)) => self.to_utc(Micros(a.day_before(b.tod) + b.tod)),
            (None, None, None) => {
                return Err(err(
                    "no time: no AttributeTimeinSecs, and no date for the @ time (no ISO-8601 \
                     line or 'Local time:' header before it)"
                        .into(),
                ))
            }
        };
        let kind = match b.kind {
            Kind::Agent(kind) => {
                let dn = required_dn(b.dn).map_err(err)?;
                TLibKind::Agent(AgentEvent {
                    kind,
                    dn,
                    agent_id: b.agent_id.map(AgentId::from),
                    queue: b.queue.map(Queue::from),
                    work_mode: b.work_mode,
                    reasons: KvList(b.reasons),
                    extensions: KvList(b.extensions),
                })
            }
            Kind::AddressInfo => {
                let dn = required_dn(b.dn).map_err(err)?;
                TLibKind::AddressInfo(AddressInfo {
                    dn,
                    agent_id: b.agent_id.map(AgentId::from),
                    agent_status: b.agent_status,
                    work_mode: b.work_mode,
                    reasons: KvList(b.reasons),
                    extensions: KvList(b.extensions),
                })
            }
            Kind::LinkConnected => TLibKind::LinkConnected,
            Kind::LinkDisconnected => TLibKind::LinkDisconnected,
        };
        Ok(Envelope {
            time,
            recorded: self.recorded,
            event: Event::TLib(TLibEvent {
                tserver,
                source_seq: b.seq,
                kind,
            }),
        })
    }
}

fn required_dn(dn: Option<String>) -> Result<Dn, String> {
    match dn {
        Some(dn) if !dn.is_empty() => Ok(Dn::from(dn)),
        Some(_) => Err("empty AttributeThisDN".into()),
        None => Err("no AttributeThisDN".into()),
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

fn trim_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(0, |e| e + 1);
    &b[..end]
}

/// `Name<ws>value`: the name up to the first tab or space, the value after the whitespace.
fn split_name_value(body: &[u8]) -> (&[u8], &[u8]) {
    match memchr2(b'\t', b' ', body) {
        Some(i) => {
            let rest = &body[i..];
            let start = rest
                .iter()
                .position(|c| !matches!(c, b' ' | b'\t'))
                .unwrap_or(rest.len());
            (&body[..i], trim_end(&rest[start..]))
        }
        None => (body, &[]),
    }
}

/// A string value: `'quoted'` (up to the last quote on the line) or bare.
fn text(v: &[u8]) -> Result<&str, String> {
    let raw = match v.split_first() {
        Some((b'\'', rest)) => match memrchr(b'\'', rest) {
            Some(j) => &rest[..j],
            None => return Err("unterminated quote".into()),
        },
        _ => v,
    };
    std::str::from_utf8(raw).map_err(|_| "invalid UTF-8".into())
}

/// The leading decimal number of a value (`1439853377 (23:16:17)` gives 1439853377).
fn parse_int(v: &[u8]) -> Result<i64, String> {
    let (neg, digits) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, v),
    };
    let end = digits
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let bad = || format!("{:?} is not a number", String::from_utf8_lossy(v));
    if end == 0 || !matches!(digits.get(end), None | Some(b' ' | b'\t' | b'(')) {
        return Err(bad());
    }
    let mut n: i64 = 0;
    for &d in &digits[..end] {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(if neg { -n } else { n })
}

/// A hex sequence number (`00000000010c9288`, optionally `0x`-prefixed).
fn parse_hex(v: &[u8]) -> Result<u64, String> {
    let digits = v.strip_prefix(b"0x").unwrap_or(v);
    let bad = || format!("{:?} is not a hex number", String::from_utf8_lossy(v));
    if digits.is_empty() || digits.len() > 16 {
        return Err(bad());
    }
    let mut n: u64 = 0;
    for &d in digits {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(bad()),
        };
        n = (n << 4) | u64::from(x);
    }
    Ok(n)
}

/// `1 (ManualIn)` (the leading number counts) or a bare name.
fn parse_work_mode(v: &[u8]) -> Result<WorkMode, String> {
    if matches!(v.first(), Some(b'0'..=b'9' | b'-')) {
        let code = parse_int(v)?;
        return i32::try_from(code)
            .map(WorkMode::from_code)
            .map_err(|_| format!("{code} is not a work mode"));
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(WorkMode::parse)
        .ok_or_else(|| format!("{:?} is not a work mode", String::from_utf8_lossy(v)))
}

/// A key-value pair line: `'Key'\t'Value'`, `'Key'\tnumber` (or a bare key).
fn parse_pair(body: &[u8]) -> Result<(&str, &str), String> {
    let (key, rest) = match body.split_first() {
        // A key runs to the next quote; a tab inside it means that quote opened the value, so
        // the key's own quote was never closed.
        Some((b'\'', rest)) => match memchr(b'\'', rest) {
            Some(j) if memchr(b'\t', &rest[..j]).is_none() => (&rest[..j], &rest[j + 1..]),
            _ => return Err("unterminated quote".into()),
        },
        _ => {
            let (k, v) = split_name_value(body);
            (k, v)
        }
    };
    let key = std::str::from_utf8(key).map_err(|_| "invalid UTF-8 in a key".to_owned())?;
    let start = rest
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(rest.len());
    let value = text(trim_end(&rest[start..]))?;
    Ok((key, value))
}

/// `HH:MM:SS[.f...]` at the start of `b`: microseconds since midnight and the rest of the line.
fn parse_tod(b: &[u8]) -> Option<(i64, &[u8])> {
    let two = |i: usize| -> Option<i64> {
        let (a, c) = (*b.get(i)?, *b.get(i + 1)?);
        (a.is_ascii_digit() && c.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (c - b'0')))
    };
    let (h, m, s) = (two(0)?, two(3)?, two(6)?);
    if b.get(2) != Some(&b':') || b.get(5) != Some(&b':') || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let mut micros = 0i64;
    let mut i = 8;
    if matches!(b.get(8), Some(b'.' | b',')) {
        i = 9;
        let mut scale = 100_000;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            micros += i64::from(d - b'0') * scale;
            scale /= 10;
            i += 1;
        }
    }
    Some((((h * 60 + m) * 60 + s) * 1_000_000 + micros, &b[i..]))
}

/// The message name of an `@` line: the word after `message `, else the first word that starts
/// with `Event` or `Request` (the `distribute call event: EventX` style).
fn message_name(rest: &[u8]) -> Option<&[u8]> {
    if let Some(i) = memmem::find(rest, b"message ") {
        let after = &rest[i + 8..];
        let start = after.iter().position(|c| !matches!(c, b' ' | b'\t'))?;
        let word = &after[start..];
        let end = word
            .iter()
            .position(|c| !c.is_ascii_alphanumeric() && *c != b'_')
            .unwrap_or(word.len());
        // `message EventX`, `message RequestX`; not prose such as `message from client`.
        if word.first().is_some_and(u8::is_ascii_uppercase) {
            return Some(&word[..end]);
        }
    }
    rest.split(|c| matches!(c, b' ' | b'\t'))
        .map(|w| {
            w.strip_suffix(b":")
                .or_else(|| w.strip_suffix(b","))
                .unwrap_or(w)
        })
        .find(|w| {
            (w.starts_with(b"Event") || w.starts_with(b"Request"))
                && w.len() > 5
                && w.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        })
}

/// Streams [`Parsed`] items from a T-Server log; constant memory.
pub struct TlogReader<R> {
    lines: LineReader<R>,
    parser: TlogParser,
    out: VecDeque<Parsed>,
    done: bool,
}

impl<R: BufRead> TlogReader<R> {
    pub fn new(reader: R, file: &str, tserver: Option<TServerName>, recorded: Micros) -> Self {
        TlogReader {
            lines: LineReader::new(reader),
            parser: TlogParser::new(file, tserver, recorded),
            out: VecDeque::new(),
            done: false,
        }
    }

    /// Bytes read so far (for progress bars).
    pub fn byte_offset(&self) -> u64 {
        self.lines.byte_offset()
    }

    /// Lines read so far.
    pub fn line_no(&self) -> u64 {
        self.lines.line_no()
    }

    /// The T-Server the events are attributed to, if known yet.
    pub fn tserver(&self) -> Option<&TServerName> {
        self.parser.tserver()
    }

    /// See [`TlogParser::with_log_zone`].
    pub fn with_log_zone(mut self, zone: Option<Zone>) -> Self {
        self.parser = self.parser.with_log_zone(zone);
        self
    }
}

impl<R: BufRead> Iterator for TlogReader<R> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        loop {
            if let Some(item) = self.out.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let parser = &mut self.parser;
            let out = &mut self.out;
            let step = self.lines.next_line(|l: Line<'_>| {
                if l.truncated {
                    parser.push_overlong(l.bytes, l.line_no, l.byte_offset, out);
                } else {
                    parser.push_line(l.bytes, l.line_no, l.byte_offset, out);
                }
            });
            match step {
                Ok(Some(())) => {}
                Ok(None) => {
                    self.parser.finish(&mut self.out);
                    self.done = true;
                }
                Err(e) => {
                    self.parser.finish(&mut self.out);
                    self.out.push_back(Parsed::Malformed(ParseError {
                        file: self.parser.file.clone(),
                        line: self.lines.line_no() + 1,
                        byte_offset: self.lines.byte_offset(),
                        reason: format!("read error: {e}"),
                    }));
                    self.done = true;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "tlog_tests.rs"]
pub(crate) mod tests;
