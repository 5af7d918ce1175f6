//! Splitting bytes into bounded lines: one splitter for every source.
//!
//! `BufRead::read_until` grows its buffer to the longest line, so one multi-gigabyte line of
//! garbage would take that much memory. [`LineSplitter`] caps a line at [`MAX_LINE`] bytes: the
//! rest is read and dropped, and the line is handed on marked `truncated` so the parser can
//! report it. Lines that lie wholly inside the bytes at hand (nearly all of them) are handed on
//! without copying; only lines that straddle two chunks are copied into one reused buffer.
//! [`LineReader`] drives it over a `BufRead` (files, stdin); the follower and the feed push the
//! chunks they read (`follow::LineSplitter::push`).

use memchr::memchr;
use std::io::{self, BufRead};

/// The longest line kept whole (1 MiB). A printout line is never near this; a longer line is
/// garbage or a binary blob.
pub const MAX_LINE: usize = 1 << 20;

/// One line of input, without its `\n` (and without a `\r` before it).
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// 1-based.
    pub line_no: u64,
    /// Offset of the line's first byte in the input.
    pub byte_offset: u64,
    /// The line was longer than the cap; `bytes` holds only its first `cap` bytes.
    pub truncated: bool,
}

/// Bytes in, capped lines out, with line numbers and byte offsets; see the module
/// documentation.
#[derive(Debug)]
pub struct LineSplitter {
    /// The current line's bytes so far, up to the cap (stale once its line was handed on:
    /// cleared when the next line starts).
    partial: Vec<u8>,
    /// Bytes of the current partial line seen so far (may exceed what `partial` keeps).
    partial_len: u64,
    line_no: u64,
    /// Offset of the start of the current partial line.
    offset: u64,
    cap: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineSplitter {
    pub fn new(cap: usize) -> Self {
        LineSplitter {
            partial: Vec::new(),
            partial_len: 0,
            line_no: 0,
            offset: 0,
            cap,
        }
    }

    /// The next line that `avail` (the input after everything handed in before) completes,
    /// with how many bytes of `avail` it used; `None` when `avail` holds no newline: then all of
    /// it was kept as the start of a line.
    pub fn next_line<'a>(&'a mut self, avail: &'a [u8]) -> Option<(Line<'a>, usize)> {
        match memchr(b'\n', avail) {
            Some(i) if self.partial_len == 0 && i <= self.cap => {
                // The common case: the whole line is in `avail`.
                self.line_no += 1;
                let line = Line {
                    bytes: trim_cr(&avail[..i]),
                    line_no: self.line_no,
                    byte_offset: self.offset,
                    truncated: false,
                };
                self.offset += i as u64 + 1;
                Some((line, i + 1))
            }
            Some(i) => {
                self.keep(&avail[..i]);
                Some((self.take_line(1), i + 1))
            }
            None => {
                self.keep(avail);
                None
            }
        }
    }

    /// The end of input: the last line, if it had no newline.
    pub fn finish(&mut self) -> Option<Line<'_>> {
        (self.partial_len > 0).then(|| self.take_line(0))
    }

    /// Starts again at line 1, offset 0, dropping any partial line.
    pub fn reset(&mut self) {
        self.partial.clear();
        self.partial_len = 0;
        self.line_no = 0;
        self.offset = 0;
    }

    /// Bytes of an incomplete last line held back.
    pub fn pending(&self) -> u64 {
        self.partial_len
    }

    /// Lines handed on so far.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Bytes handed on so far (as lines, with their newlines).
    pub fn byte_offset(&self) -> u64 {
        self.offset
    }

    /// Appends what still fits under the cap; the rest of an overlong line is dropped.
    fn keep(&mut self, part: &[u8]) {
        if self.partial_len == 0 {
            self.partial.clear();
        }
        let room = self.cap.saturating_sub(self.partial.len()).min(part.len());
        self.partial.extend_from_slice(&part[..room]);
        self.partial_len += part.len() as u64;
    }

    /// Hands on the line kept in `partial`, ended by a newline (`newline` = 1) or the input's end.
    fn take_line(&mut self, newline: u64) -> Line<'_> {
        let truncated = self.partial_len > self.cap as u64;
        let start = self.offset;
        self.line_no += 1;
        self.offset += self.partial_len + newline;
        self.partial_len = 0;
        Line {
            bytes: if truncated {
                &self.partial
            } else {
                trim_cr(&self.partial)
            },
            line_no: self.line_no,
            byte_offset: start,
            truncated,
        }
    }
}

/// Reads capped lines from a `BufRead`; see the module documentation.
pub struct LineReader<R> {
    inner: R,
    splitter: LineSplitter,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_cap(inner, MAX_LINE)
    }

    pub fn with_cap(inner: R, cap: usize) -> Self {
        LineReader {
            inner,
            splitter: LineSplitter::new(cap),
        }
    }

    /// Lines read so far.
    pub fn line_no(&self) -> u64 {
        self.splitter.line_no()
    }

    /// Bytes consumed so far.
    pub fn byte_offset(&self) -> u64 {
        self.splitter.byte_offset()
    }

    /// Reads the next line and hands it to `f`; `Ok(None)` at the end of input. A last line
    /// without a newline is still a line.
    pub fn next_line<T>(&mut self, f: impl FnOnce(Line<'_>) -> T) -> io::Result<Option<T>> {
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                return Ok(self.splitter.finish().map(f));
            }
            let n = avail.len();
            match self.splitter.next_line(avail) {
                Some((line, used)) => {
                    let out = f(line);
                    self.inner.consume(used);
                    return Ok(Some(out));
                }
                None => self.inner.consume(n),
            }
        }
    }
}

fn trim_cr(b: &[u8]) -> &[u8] {
    match b.split_last() {
        Some((b'\r', rest)) => rest,
        _ => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn collect(input: &[u8], cap: usize, bufsize: usize) -> Vec<(Vec<u8>, u64, u64, bool)> {
        let mut r = LineReader::with_cap(BufReader::with_capacity(bufsize, input), cap);
        let mut v = Vec::new();
        while let Some(l) = r
            .next_line(|l| (l.bytes.to_vec(), l.line_no, l.byte_offset, l.truncated))
            .unwrap()
        {
            v.push(l);
        }
        v
    }

    #[test]
    fn splits_lines_with_numbers_and_offsets_across_refills() {
        let input = b"ab\r\ncdefgh\n\nlast";
        for bufsize in [1, 2, 3, 7, 64] {
            let got = collect(input, 100, bufsize);
            assert_eq!(
                got,
                vec![
                    (b"ab".to_vec(), 1, 0, false),
                    (b"cdefgh".to_vec(), 2, 4, false),
                    (b"".to_vec(), 3, 11, false),
                    (b"last".to_vec(), 4, 12, false),
                ],
                "bufsize {bufsize}"
            );
        }
    }

    #[test]
    fn caps_long_lines_and_goes_on() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\nok\n");
        for bufsize in [4, 16, 1024] {
            let got = collect(&input, 10, bufsize);
            assert_eq!(got.len(), 2);
            assert_eq!(got[0], (vec![b'x'; 10], 1, 0, true));
            assert_eq!(got[1], (b"ok".to_vec(), 2, 51, false));
        }
        // Exactly at the cap is not truncated.
        let got = collect(b"0123456789\n", 10, 4);
        assert_eq!(got, vec![(b"0123456789".to_vec(), 1, 0, false)]);
    }
}
