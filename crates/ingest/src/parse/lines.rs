//! Bounded line reading over a `BufRead`.
//!
//! `BufRead::read_until` grows its buffer to the longest line, so one multi-gigabyte line of
//! garbage would take that much memory. [`LineReader`] caps a line at [`MAX_LINE`] bytes: the
//! rest is read and dropped, and the line is handed on marked `truncated` so the parser can
//! report it. Lines that lie wholly inside the reader's buffer (nearly all of them) are handed
//! on without copying; only lines that straddle a refill are copied into one reused buffer.

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

/// Reads capped lines from a `BufRead`; see the module documentation.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    line_no: u64,
    offset: u64,
    cap: usize,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_cap(inner, MAX_LINE)
    }

    pub fn with_cap(inner: R, cap: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            line_no: 0,
            offset: 0,
            cap,
        }
    }

    /// Lines read so far.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Bytes consumed so far.
    pub fn byte_offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next line and hands it to `f`; `Ok(None)` at the end of input. A last line
    /// without a newline is still a line.
    pub fn next_line<T>(&mut self, f: impl FnOnce(Line<'_>) -> T) -> io::Result<Option<T>> {
        self.buf.clear();
        let mut len: u64 = 0;
        let mut newline = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if len == 0 {
                    return Ok(None);
                }
                break;
            }
            match memchr(b'\n', avail) {
                Some(i) if len == 0 && i <= self.cap => {
                    // The common case: the whole line is in the reader's buffer.
                    let line = Line {
                        bytes: trim_cr(&avail[..i]),
                        line_no: self.line_no + 1,
                        byte_offset: self.offset,
                        truncated: false,
                    };
                    let out = f(line);
                    self.inner.consume(i + 1);
                    self.line_no += 1;
                    self.offset += i as u64 + 1;
                    return Ok(Some(out));
                }
                Some(i) => {
                    keep(&mut self.buf, self.cap, &avail[..i]);
                    len += i as u64 + 1;
                    newline = true;
                    self.inner.consume(i + 1);
                    break;
                }
                None => {
                    let n = avail.len();
                    keep(&mut self.buf, self.cap, avail);
                    len += n as u64;
                    self.inner.consume(n);
                }
            }
        }
        let start = self.offset;
        self.line_no += 1;
        self.offset += len;
        let content_len = len - u64::from(newline);
        let truncated = content_len > self.cap as u64;
        let bytes = if truncated {
            &self.buf[..]
        } else {
            trim_cr(&self.buf)
        };
        Ok(Some(f(Line {
            bytes,
            line_no: self.line_no,
            byte_offset: start,
            truncated,
        })))
    }
}

/// Appends what still fits under the cap; the rest of an overlong line is dropped.
fn keep(buf: &mut Vec<u8>, cap: usize, part: &[u8]) {
    let room = cap.saturating_sub(buf.len()).min(part.len());
    buf.extend_from_slice(&part[..room]);
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
