//! Input parsers: T-Server log printouts ([`tlog`]) and NDJSON ([`ndjson`]).
//!
//! Both are streaming readers over a `BufRead` that yield [`Parsed`] items in input order and
//! keep memory constant (one reused line buffer, lines capped at [`MAX_LINE`]). Bad input never
//! stops a reader: it becomes a located [`Parsed::Malformed`] and reading goes on (docs/design.md
//! invariant 7). The T-Server log logic itself is a sans-IO push core
//! ([`tlog::TlogParser`]) so that followed files and TCP feeds can drive it line by line.

pub mod lines;
pub mod ndjson;
pub mod tlog;

use ivrstate_model::Envelope;
use std::fmt;

pub use lines::{Line, LineReader, LineSplitter, MAX_LINE};
pub use ndjson::{parse_ndjson_line, write_ndjson, NdjsonReader};
pub use tlog::{TlogParser, TlogReader};

/// One item of parser output.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Parsed {
    /// A state-carrying event, ready to append; `line` is where its printout (or NDJSON line)
    /// starts, 1-based, which provenance records.
    Event { line: u64, envelope: Envelope },
    /// A printout that carries no state (EventDialing, a request printout, ...): counted, not
    /// an error. `line` is where it starts, `what` its message name.
    Skipped { line: u64, what: String },
    /// Input that could not be understood; nothing of it is kept.
    Malformed(ParseError),
}

/// Where and why input was rejected.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub struct ParseError {
    pub file: String,
    /// 1-based line number of the start of the rejected printout or line.
    pub line: u64,
    /// Byte offset of that line in the input.
    pub byte_offset: u64,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} (byte {})",
            self.file, self.line, self.reason, self.byte_offset
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_displays_file_line_reason_byte() {
        let e = ParseError {
            file: "ts.log".into(),
            line: 12,
            byte_offset: 345,
            reason: "unterminated quote".into(),
        };
        assert_eq!(e.to_string(), "ts.log:12: unterminated quote (byte 345)");
    }
}
