//! Opening what `ingest` is pointed at: files, directories of log segments, gzip'd segments.
//!
//! - A directory stands for every file in it (not hidden, not in subdirectories), in name order:
//!   T-Server names its segments `APP.YYYYMMDD_HHMMSS_mmm.log`, so name order is time order.
//! - A file is recognised by its first bytes, not its name: gzip (`1f 8b`) is decompressed on a
//!   thread of its own while the caller parses, so a compressed log costs its decompression on
//!   top of parsing and no more; text is read as it is; anything else (a NUL byte in the first
//!   block: a binary, a UTF-16 file, a store) is an error naming the file, never a silent zero.

use flate2::read::MultiGzDecoder;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::mpsc;
use thiserror::Error;

/// How much of a file is looked at to tell text from binary.
const SNIFF: usize = 8 * 1024;
/// Decompressed bytes handed over at a time.
const CHUNK: usize = 256 * 1024;
/// Chunks decompressed ahead of the parser (bounded: memory stays constant).
const AHEAD: usize = 4;

#[derive(Debug, Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is neither a text log nor gzip (binary data in its first {SNIFF} bytes); \
         give T-Server log files, NDJSON files or their .gz"
    )]
    NotText { path: String },
    #[error("{path} is an empty directory: no log segments to read")]
    EmptyDirectory { path: String },
}

/// The files to read for these arguments, in order: each directory replaced by its files in
/// name order. `-` (stdin) is kept as it is.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" || !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let io_err = |source| InputError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden && entry.file_type().map_err(io_err)?.is_file() {
                files.push(entry.path());
            }
        }
        if files.is_empty() {
            return Err(InputError::EmptyDirectory {
                path: path.display().to_string(),
            });
        }
        files.sort();
        out.extend(files);
    }
    Ok(out)
}

/// What a file turned out to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Encoding {
    Text,
    Gzip,
}

/// `reader` (the bytes of `name`) as text: read as it is, or decompressed on another thread
/// when it is gzip. Refuses binary data with an error naming `name`.
pub fn open_text<R: Read + Send + 'static>(
    mut reader: R,
    name: &str,
) -> Result<(Box<dyn Read + Send>, Encoding), InputError> {
    let io_err = |source| InputError::Io {
        path: name.to_owned(),
        source,
    };
    let head = read_head(&mut reader, SNIFF).map_err(io_err)?;
    let whole = io::Cursor::new(head.clone()).chain(reader);
    if head.starts_with(&[0x1f, 0x8b]) {
        let mut text = Decompressed::spawn(whole, name);
        // The decompressed text must be text too (a .gz of a binary is no log either).
        let first = read_head(&mut text, SNIFF).map_err(io_err)?;
        if first.contains(&0) {
            return Err(InputError::NotText {
                path: name.to_owned(),
            });
        }
        let text = io::Cursor::new(first).chain(text);
        return Ok((Box::new(text), Encoding::Gzip));
    }
    if head.contains(&0) {
        return Err(InputError::NotText {
            path: name.to_owned(),
        });
    }
    Ok((Box::new(whole), Encoding::Text))
}

/// Up to `n` bytes from the start of `r` (fewer only at its end).
fn read_head(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Gzip decompressed on a thread of its own, handed over in chunks through a bounded channel.
struct Decompressed {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Decompressed {
    fn spawn<R: Read + Send + 'static>(compressed: R, name: &str) -> Decompressed {
        let (tx, rx) = mpsc::sync_channel(AHEAD);
        let name = name.to_owned();
        let spawned = std::thread::Builder::new()
            .name("gunzip".to_owned())
            .spawn(move || {
                // Concatenated members (what `cat a.gz b.gz` or a rotating logger writes) are
                // one stream.
                let mut decoder =
                    MultiGzDecoder::new(io::BufReader::with_capacity(CHUNK, compressed));
                loop {
                    let mut chunk = vec![0u8; CHUNK];
                    let result = fill(&mut decoder, &mut chunk).map(|n| {
                        chunk.truncate(n);
                        chunk
                    });
                    let end = !matches!(&result, Ok(c) if !c.is_empty());
                    let result =
                        result.map_err(|e| io::Error::new(e.kind(), format!("{name}: gzip: {e}")));
                    // The reader was dropped: nobody wants the rest.
                    if tx.send(result).is_err() || end {
                        return;
                    }
                }
            });
        let rx = match spawned {
            Ok(_) => rx,
            Err(e) => {
                // No thread: report it as the stream's error.
                let (tx, rx) = mpsc::sync_channel(1);
                let _ = tx.send(Err(e));
                rx
            }
        };
        Decompressed {
            rx,
            chunk: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

/// Reads until `buf` is full or the input ends; the number of bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Read for Decompressed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let rest = self.chunk.get(self.pos..).unwrap_or_default();
            if !rest.is_empty() {
                let n = rest.len().min(buf.len());
                buf.get_mut(..n)
                    .unwrap_or_default()
                    .copy_from_slice(rest.get(..n).unwrap_or_default());
                self.pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) if !chunk.is_empty() => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Ok(_)) | Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_all(r: impl Read + Send + 'static, name: &str) -> Result<(Vec<u8>, Encoding), String> {
        let (mut r, enc) = open_text(r, name).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok((out, enc))
    }

    #[test]
    fn text_and_gzip_are_told_by_content() {
        let text: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        assert_eq!(
            read_all(io::Cursor::new(text.clone()), "a.log").unwrap(),
            (text.clone(), Encoding::Text)
        );
        // A gzip'd log whatever its name, and two concatenated members as one stream.
        let mut two = gzip(&text);
        two.extend(gzip(b"tail\n"));
        let mut want = text.clone();
        want.extend_from_slice(b"tail\n");
        assert_eq!(
            read_all(io::Cursor::new(two), "a.log").unwrap(),
            (want, Encoding::Gzip)
        );
        assert_eq!(
            read_all(io::Cursor::new(Vec::new()), "empty.log").unwrap(),
            (Vec::new(), Encoding::Text)
        );
    }

    #[test]
    fn binary_is_an_error_naming_the_file() {
        let err = read_all(io::Cursor::new(vec![0u8, 1, 2, 3]), "store.db").unwrap_err();
        assert!(
            err.contains("store.db") && err.contains("neither a text log nor gzip"),
            "{err}"
        );
        let err = read_all(io::Cursor::new(gzip(&[0u8; 100])), "bin.gz").unwrap_err();
        assert!(err.contains("bin.gz"), "{err}");
    }

    #[test]
    fn a_damaged_gzip_is_a_read_error_naming_the_file() {
        let mut z = gzip(&vec![b'x'; 1 << 20]);
        let n = z.len();
        z.truncate(n / 2);
        let err = read_all(io::Cursor::new(z), "cut.log.gz").unwrap_err();
        assert!(err.contains("cut.log.gz"), "{err}");
    }

    #[test]
    fn a_directory_is_its_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "TS.20150818_000000_000.log",
            "TS.20150817_000000_000.log.gz",
            ".hidden",
        ] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let files = expand(&[dir.path().to_path_buf(), PathBuf::from("-")]).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or(p.as_os_str())
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "TS.20150817_000000_000.log.gz",
                "TS.20150818_000000_000.log",
                "-"
            ]
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(expand(&[empty.path().to_path_buf()])
            .unwrap_err()
            .to_string()
            .contains("empty directory"));
    }
}
