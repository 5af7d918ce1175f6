//! NDJSON: one JSON object a line, the format `export` writes ([`write_ndjson`]).
//!
//! A line is a [`Record`] (with its `seq`) or a bare [`Envelope`]; both read as an `Envelope`,
//! because serde ignores the unknown `seq` field. The seq is ignored on ingest on purpose: the
//! target log numbers its own records, so exporting and ingesting into an empty store gives the
//! same log. `recorded` in the line is kept: it says when the event first entered a store.

use super::lines::{Line, LineReader};
use super::{ParseError, Parsed};
use ivrstate_model::{Envelope, Micros, Record};
use std::io::{self, BufRead, Write};

/// Writes one record as one NDJSON line (the export format that [`NdjsonReader`] reads).
pub fn write_ndjson<W: Write + ?Sized>(w: &mut W, rec: &Record) -> io::Result<()> {
    serde_json::to_writer(&mut *w, rec).map_err(io::Error::from)?;
    w.write_all(b"\n")
}

/// Streams [`Parsed`] items from NDJSON; constant memory.
pub struct NdjsonReader<R> {
    lines: LineReader<R>,
    file: String,
    done: bool,
}

impl<R: BufRead> NdjsonReader<R> {
    /// `recorded` is not used (every line carries its own); it is taken so that both readers
    /// are built alike.
    pub fn new(reader: R, file: &str, recorded: Micros) -> Self {
        let _ = recorded;
        NdjsonReader {
            lines: LineReader::new(reader),
            file: file.to_owned(),
            done: false,
        }
    }

    /// Bytes read so far (for progress bars).
    pub fn byte_offset(&self) -> u64 {
        self.lines.byte_offset()
    }
}

fn parse_line(file: &str, l: Line<'_>) -> Option<Parsed> {
    if l.truncated {
        return Some(Parsed::Malformed(ParseError {
            file: file.to_owned(),
            line: l.line_no,
            byte_offset: l.byte_offset,
            reason: "line is longer than the line limit; skipped".into(),
        }));
    }
    parse_ndjson_line(file, l.bytes, l.line_no, l.byte_offset)
}

/// One NDJSON line (for line-at-a-time sources such as a TCP feed): `None` for a blank line.
pub fn parse_ndjson_line(
    file: &str,
    line: &[u8],
    line_no: u64,
    byte_offset: u64,
) -> Option<Parsed> {
    let err = |reason: String| {
        Some(Parsed::Malformed(ParseError {
            file: file.to_owned(),
            line: line_no,
            byte_offset,
            reason,
        }))
    };
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<Envelope>(line) {
        Ok(envelope) => Some(Parsed::Event {
            line: line_no,
            envelope,
        }),
        Err(e) => err(format!("not an event record: {e}")),
    }
}

impl<R: BufRead> Iterator for NdjsonReader<R> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        while !self.done {
            let file = &self.file;
            match self.lines.next_line(|l| parse_line(file, l)) {
                Ok(Some(Some(item))) => return Some(item),
                Ok(Some(None)) => {}
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Parsed::Malformed(ParseError {
                        file: self.file.clone(),
                        line: self.lines.line_no() + 1,
                        byte_offset: self.lines.byte_offset(),
                        reason: format!("read error: {e}"),
                    }));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivrstate_model::{
        AgentEvent, AgentEventKind, ConfigEvent, Dn, Event, KvList, TLibEvent, TLibKind,
        TServerName, WorkMode,
    };

    fn record(seq: u64) -> Record {
        Record {
            seq,
            envelope: Envelope {
                time: Micros::from_secs_micros(1_439_853_377, 458_658),
                recorded: Micros::from_secs(1_700_000_000),
                event: Event::TLib(TLibEvent {
                    tserver: TServerName::from("TS_SIP"),
                    source_seq: Some(0x10c9288),
                    kind: TLibKind::Agent(AgentEvent {
                        kind: AgentEventKind::NotReady,
                        dn: Dn::from("7001"),
                        agent_id: None,
                        queue: None,
                        work_mode: Some(WorkMode::AuxWork),
                        reasons: KvList(vec![("ReasonCode".into(), "Break".into())]),
                        extensions: KvList::default(),
                    }),
                }),
            },
        }
    }

    fn read(input: &[u8]) -> Vec<Parsed> {
        NdjsonReader::new(input, "x.ndjson", Micros(0)).collect()
    }

    #[test]
    fn export_format_round_trips_and_ignores_seq() {
        let mut buf = Vec::new();
        write_ndjson(&mut buf, &record(7)).unwrap();
        write_ndjson(&mut buf, &record(8)).unwrap();
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 2);
        let got = read(&buf);
        assert_eq!(
            got,
            vec![
                Parsed::Event {
                    line: 1,
                    envelope: record(7).envelope
                },
                Parsed::Event {
                    line: 2,
                    envelope: record(8).envelope
                }
            ]
        );
    }

    #[test]
    fn bare_envelopes_and_blank_lines() {
        let env = Envelope {
            time: Micros::from_secs(10),
            recorded: Micros::from_secs(11),
            event: Event::Config(ConfigEvent::TServerRemoved { name: "TS".into() }),
        };
        let mut input = b"\n  \r\n".to_vec();
        input.extend(serde_json::to_vec(&env).unwrap());
        input.extend(b"\r\n\n");
        assert_eq!(
            read(&input),
            vec![Parsed::Event {
                line: 3,
                envelope: env
            }]
        );
    }

    #[test]
    fn bad_lines_are_located_and_reading_goes_on() {
        let mut input = b"{not json}\n".to_vec();
        input.extend(b"{\"seq\":1}\n\xff\xfe\n");
        write_ndjson(&mut input, &record(3)).unwrap();
        let got = read(&input);
        assert_eq!(got.len(), 4);
        let errs: Vec<_> = got
            .iter()
            .filter_map(|p| match p {
                Parsed::Malformed(e) => Some((e.line, e.byte_offset)),
                _ => None,
            })
            .collect();
        assert_eq!(errs, vec![(1, 0), (2, 11), (3, 21)]);
        assert_eq!(
            got[3],
            Parsed::Event {
                line: 4,
                envelope: record(3).envelope
            }
        );
        if let Parsed::Malformed(e) = &got[0] {
            assert!(
                e.to_string().starts_with("x.ndjson:1: not an event record"),
                "{e}"
            );
        }
    }
}
