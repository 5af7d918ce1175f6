//! Following a growing log file (`serve --follow FILE`), like `tail -F`.
//!
//! The file is read from its start, then complete new lines are yielded as they are appended; a
//! partial last line waits for its newline. Rotation (the path now names another file) and
//! truncation (the file shrank below what was read) reopen the path and start again from its
//! beginning, announced by [`FollowItem::Reset`] (line numbers restart at 1).
//!
//! The logic is split so that it is testable without sleeping: [`LineSplitter`] (bytes in,
//! lines out) and [`decide`] (what a stat of the path means) are pure; [`Follower::poll`] does
//! one round of I/O; [`follow_lines`] is the thin driver, a thread that polls and sends into a
//! tokio channel. A thread rather than a task because every step is blocking file I/O, and it
//! ends by itself when the receiver is dropped.

use crate::parse::{parse_ndjson_line, Line, Parsed, TlogParser};
use crate::{now, Format, BATCH, IDLE_FLUSH};
use ivrstate_model::{TServerName, Zone};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a follower yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowItem {
    /// A complete line (without `\n` or `\r\n`). `truncated`: it was longer than the line cap
    /// and `bytes` holds only its start.
    Line {
        bytes: Vec<u8>,
        line_no: u64,
        byte_offset: u64,
        truncated: bool,
    },
    /// The file was rotated or truncated and is read again from its start: a consumer ends
    /// whatever it was in the middle of (`TlogParser::finish`).
    Reset { reason: String },
    /// The file cannot be read (yet); the follower keeps trying.
    Error { message: String },
}

pub use crate::parse::LineSplitter;

impl FollowItem {
    fn line(line: Line<'_>) -> FollowItem {
        FollowItem::Line {
            bytes: line.bytes.to_vec(),
            line_no: line.line_no,
            byte_offset: line.byte_offset,
            truncated: line.truncated,
        }
    }
}

/// A byte stream pushed in chunks of any size: what the follower and the feed read.
impl LineSplitter {
    /// Pushes bytes; every line they complete is appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<FollowItem>) {
        while let Some((line, used)) = self.next_line(chunk) {
            out.push(FollowItem::line(line));
            chunk = chunk.get(used..).unwrap_or_default();
        }
    }

    /// Emits the partial last line, if any (the file is complete: it was rotated away).
    pub fn flush_partial(&mut self, out: &mut Vec<FollowItem>) {
        if let Some(line) = self.finish() {
            out.push(FollowItem::line(line));
        }
    }
}

/// Which file a handle or a path refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// What a stat of the followed path found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub id: FileId,
    pub len: u64,
}

/// What to do after a stat of the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read on from the open handle.
    Read,
    /// Reopen the path from its start. `drain_old`: read the old handle to its end first (a
    /// rotated file is complete; a truncated one's old bytes are gone).
    Reopen { reason: String, drain_old: bool },
}

/// The rotation and truncation rules. `opened` is the file the handle reads, `read_pos` how far;
/// `now` the stat of the path (`None`: it does not exist, as between a rotation's rename and
/// create, so the old handle is read on).
pub fn decide(opened: FileId, read_pos: u64, now: Option<FileStat>) -> Action {
    match now {
        Some(s) if s.id != opened => Action::Reopen {
            reason: "file rotated: reading the new file from its start".into(),
            drain_old: true,
        },
        Some(s) if s.len < read_pos => Action::Reopen {
            reason: format!(
                "file truncated (from {read_pos} to {} bytes): reading again from its start",
                s.len
            ),
            drain_old: false,
        },
        _ => Action::Read,
    }
}

/// One followed path: the open handle, how far it was read, and the line splitter.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<(File, FileId)>,
    pos: u64,
    splitter: LineSplitter,
    /// An open error was reported; not again until the path opens.
    reported: bool,
    chunk: Vec<u8>,
}

/// Most bytes read in one poll, so a large existing file is sent on in steps.
const POLL_BYTES: usize = 1 << 20;

impl Follower {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Follower {
            path: path.into(),
            file: None,
            pos: 0,
            splitter: LineSplitter::default(),
            reported: false,
            chunk: vec![0; 64 * 1024],
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One round: reopen if the file was rotated or truncated, read what is new. Returns true
    /// if bytes were read (call again at once; there may be more).
    pub fn poll(&mut self, out: &mut Vec<FollowItem>) -> bool {
        let Some(opened) = self.file.as_ref().map(|(_, id)| *id) else {
            return self.open(out) && self.read(out);
        };
        let now = std::fs::metadata(&self.path).ok().map(|m| FileStat {
            id: file_id(&m),
            len: m.len(),
        });
        match decide(opened, self.pos, now) {
            Action::Read => self.read(out),
            Action::Reopen { reason, drain_old } => {
                if drain_old {
                    while self.read(out) {}
                    self.splitter.flush_partial(out);
                }
                tracing::info!(path = %self.path.display(), "{reason}");
                out.push(FollowItem::Reset { reason });
                self.file = None;
                self.pos = 0;
                self.splitter.reset();
                self.open(out);
                true
            }
        }
    }

    fn open(&mut self, out: &mut Vec<FollowItem>) -> bool {
        let opened = File::open(&self.path).and_then(|f| {
            let id = file_id(&f.metadata()?);
            Ok((f, id))
        });
        match opened {
            Ok(f) => {
                self.file = Some(f);
                self.pos = 0;
                self.reported = false;
                true
            }
            Err(e) => {
                if !self.reported {
                    self.reported = true;
                    out.push(FollowItem::Error {
                        message: format!("cannot open {}: {e} (retrying)", self.path.display()),
                    });
                }
                false
            }
        }
    }

    /// Reads up to [`POLL_BYTES`] from the handle; true if anything was read.
    fn read(&mut self, out: &mut Vec<FollowItem>) -> bool {
        let Some((file, _)) = self.file.as_mut() else {
            return false;
        };
        let mut total = 0;
        while total < POLL_BYTES {
            match file.read(&mut self.chunk) {
                Ok(0) => break,
                Ok(n) => {
                    self.splitter.push(&self.chunk[..n], out);
                    self.pos += n as u64;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    out.push(FollowItem::Error {
                        message: format!("reading {}: {e}", self.path.display()),
                    });
                    break;
                }
            }
        }
        total > 0
    }
}

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> FileId {
    // Without inodes only truncation is detected.
    FileId { dev: 0, ino: 0 }
}

/// Follows `path`, polling every `poll` when there is nothing new. The thread behind it ends
/// when the receiver is dropped.
pub fn follow_lines(path: impl Into<PathBuf>, poll: Duration) -> mpsc::Receiver<FollowItem> {
    let (tx, rx) = mpsc::channel(1024);
    let mut follower = Follower::new(path);
    let spawned = std::thread::Builder::new()
        .name("follow".into())
        .spawn(move || {
            let mut out = Vec::new();
            loop {
                if tx.is_closed() {
                    return;
                }
                let busy = follower.poll(&mut out);
                for item in out.drain(..) {
                    if tx.blocking_send(item).is_err() {
                        return;
                    }
                }
                if !busy {
                    std::thread::sleep(poll);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the file follower thread: {e}");
    }
    rx
}

/// How often a followed file is polled when it has nothing new.
const FOLLOW_POLL: Duration = Duration::from_millis(5);

/// Follows `path` (a tokio task and the follower's thread) and sends what its lines parse to,
/// batch by batch; a printout in progress is ended when the file goes quiet for
/// [`IDLE_FLUSH`]. Runs until the receiver is dropped.
///
/// `log_tz` is the zone of the log's wall-clock times when its header does not say (`--log-tz`).
pub fn spawn_follower(
    path: PathBuf,
    format: Format,
    tserver: Option<TServerName>,
    log_tz: Option<Zone>,
    tx: mpsc::Sender<Vec<Parsed>>,
) {
    tokio::spawn(async move {
        let name = path.display().to_string();
        let mut lines = follow_lines(path, FOLLOW_POLL);
        let mut parser = TlogParser::new(&name, tserver, now()).with_log_zone(log_tz);
        let mut out: Vec<Parsed> = Vec::new();
        loop {
            let item = match tokio::time::timeout(IDLE_FLUSH, lines.recv()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => {
                    parser.finish(&mut out);
                    if !out.is_empty() && tx.send(std::mem::take(&mut out)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            feed_item(&name, format, &item, &mut parser, &mut out);
            while out.len() < BATCH {
                match lines.try_recv() {
                    Ok(item) => feed_item(&name, format, &item, &mut parser, &mut out),
                    Err(_) => break,
                }
            }
            if out.len() >= BATCH && tx.send(std::mem::take(&mut out)).await.is_err() {
                return;
            }
        }
        parser.finish(&mut out);
        let _ = tx.send(out).await;
    });
}

/// Feeds one item of a line source in `format`: T-Server log lines go to `parser`, NDJSON lines
/// are parsed on their own; errors and resets are logged under `name`.
pub fn feed_item(
    name: &str,
    format: Format,
    item: &FollowItem,
    parser: &mut TlogParser,
    out: &mut Vec<Parsed>,
) {
    match (format, item) {
        (Format::Tlog, _) => feed_tlog(item, parser, out),
        (
            Format::Ndjson,
            FollowItem::Line {
                bytes,
                line_no,
                byte_offset,
                ..
            },
        ) => {
            out.extend(parse_ndjson_line(name, bytes, *line_no, *byte_offset));
        }
        (_, FollowItem::Error { message }) => tracing::warn!("{name}: {message}"),
        (_, FollowItem::Reset { reason }) => tracing::info!("{name}: {reason}"),
    }
}

/// Feeds one followed item to a T-Server log parser: lines are pushed, a reset ends the
/// printout in progress. Errors are for the caller to log; they carry no input.
pub fn feed_tlog<E: Extend<Parsed>>(item: &FollowItem, parser: &mut TlogParser, out: &mut E) {
    match item {
        FollowItem::Line {
            bytes,
            line_no,
            byte_offset,
            truncated: false,
        } => parser.push_line(bytes, *line_no, *byte_offset, out),
        FollowItem::Line {
            bytes,
            line_no,
            byte_offset,
            truncated: true,
        } => parser.push_overlong(bytes, *line_no, *byte_offset, out),
        FollowItem::Reset { .. } => parser.finish(out),
        FollowItem::Error { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(items: &[FollowItem]) -> Vec<(String, u64, u64)> {
        items
            .iter()
            .filter_map(|i| match i {
                FollowItem::Line {
                    bytes,
                    line_no,
                    byte_offset,
                    ..
                } => Some((
                    String::from_utf8_lossy(bytes).into_owned(),
                    *line_no,
                    *byte_offset,
                )),
                _ => None,
            })
            .collect()
    }

    fn l(s: &str, n: u64, o: u64) -> (String, u64, u64) {
        (s.to_owned(), n, o)
    }

    #[test]
    fn splitter_holds_partial_lines_back() {
        let mut s = LineSplitter::new(100);
        let mut out = Vec::new();
        s.push(b"one\ntw", &mut out);
        assert_eq!(lines(&out), vec![l("one", 1, 0)]);
        assert_eq!(s.pending(), 2);
        s.push(b"o\r\n", &mut out);
        s.push(b"", &mut out);
        s.push(b"\nthree", &mut out);
        assert_eq!(
            lines(&out),
            vec![l("one", 1, 0), l("two", 2, 4), l("", 3, 9)]
        );
        s.flush_partial(&mut out);
        assert_eq!(lines(&out)[3], l("three", 4, 10));
        s.flush_partial(&mut out);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn splitter_caps_long_lines() {
        let mut s = LineSplitter::new(4);
        let mut out = Vec::new();
        s.push(b"abcdefgh", &mut out);
        s.push(b"ij\nok\n", &mut out);
        assert_eq!(
            out,
            vec![
                FollowItem::Line {
                    bytes: b"abcd".to_vec(),
                    line_no: 1,
                    byte_offset: 0,
                    truncated: true
                },
                FollowItem::Line {
                    bytes: b"ok".to_vec(),
                    line_no: 2,
                    byte_offset: 11,
                    truncated: false
                },
            ]
        );
    }

    #[test]
    fn decide_rules() {
        let a = FileId { dev: 1, ino: 10 };
        let b = FileId { dev: 1, ino: 11 };
        assert_eq!(
            decide(a, 100, Some(FileStat { id: a, len: 100 })),
            Action::Read
        );
        assert_eq!(
            decide(a, 100, Some(FileStat { id: a, len: 150 })),
            Action::Read
        );
        assert_eq!(
            decide(a, 100, None),
            Action::Read,
            "rotation in progress: read the old handle"
        );
        assert!(matches!(
            decide(a, 100, Some(FileStat { id: b, len: 500 })),
            Action::Reopen {
                drain_old: true,
                ..
            }
        ));
        assert!(matches!(
            decide(a, 100, Some(FileStat { id: a, len: 20 })),
            Action::Reopen {
                drain_old: false,
                ..
            }
        ));
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn poll_all(f: &mut Follower) -> Vec<FollowItem> {
        let mut out = Vec::new();
        while f.poll(&mut out) {}
        out
    }

    #[test]
    fn follower_reads_appends_truncation_and_rotation_without_sleeping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ts.log");
        let mut f = Follower::new(&path);

        let out = poll_all(&mut f);
        assert!(matches!(&out[..], [FollowItem::Error { .. }]), "{out:?}");
        assert!(
            poll_all(&mut f).is_empty(),
            "the open error is reported once"
        );

        append(&path, "a\nb\npart");
        assert_eq!(lines(&poll_all(&mut f)), vec![l("a", 1, 0), l("b", 2, 2)]);
        append(&path, "ial\n");
        assert_eq!(lines(&poll_all(&mut f)), vec![l("partial", 3, 4)]);
        assert!(poll_all(&mut f).is_empty());

        // Truncation: start again from the beginning.
        std::fs::write(&path, "x\n").unwrap();
        let out = poll_all(&mut f);
        assert!(
            matches!(&out[0], FollowItem::Reset { reason } if reason.contains("truncated")),
            "{out:?}"
        );
        assert_eq!(lines(&out), vec![l("x", 1, 0)]);

        // Rotation: the old file's rest (even without a final newline), then the new file.
        append(&path, "y\nlast");
        std::fs::rename(&path, dir.path().join("ts.log.1")).unwrap();
        append(&path, "new\n");
        let out = poll_all(&mut f);
        assert_eq!(
            lines(&out),
            vec![l("y", 2, 2), l("last", 3, 4), l("new", 1, 0)]
        );
        assert!(
            matches!(&out[2], FollowItem::Reset { reason } if reason.contains("rotated")),
            "{out:?}"
        );
    }

    #[test]
    fn followed_lines_feed_the_tlog_parser() {
        let log = "@23:16:17.4586 [0] 8.1 message EventAgentReady\n\tAttributeTimeinSecs\t1439853377\n\tAttributeThisDN\t'7001'\n";
        let mut s = LineSplitter::default();
        let mut items = Vec::new();
        s.push(log.as_bytes(), &mut items);
        items.push(FollowItem::Reset {
            reason: "rotated".into(),
        });
        let mut p = TlogParser::new("f", Some("TS".into()), ivrstate_model::Micros(0));
        let mut out: Vec<Parsed> = Vec::new();
        for item in &items {
            feed_tlog(item, &mut p, &mut out);
        }
        assert!(
            matches!(&out[..], [Parsed::Event { envelope: e, .. }] if e.time.split().0 == 1_439_853_377),
            "{out:?}"
        );
    }

    async fn next(rx: &mut mpsc::Receiver<FollowItem>) -> FollowItem {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no item within the deadline")
            .expect("follower ended")
    }

    fn line_text(item: &FollowItem) -> String {
        match item {
            FollowItem::Line { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn follow_lines_delivers_appends_and_survives_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ts.log");
        append(&path, "first\n");
        let mut rx = follow_lines(&path, Duration::from_millis(10));
        assert_eq!(line_text(&next(&mut rx).await), "first");

        append(&path, "second\nthi");
        assert_eq!(line_text(&next(&mut rx).await), "second");
        append(&path, "rd\n");
        assert_eq!(line_text(&next(&mut rx).await), "third");

        std::fs::rename(&path, dir.path().join("old.log")).unwrap();
        append(&path, "fresh\n");
        assert!(matches!(next(&mut rx).await, FollowItem::Reset { .. }));
        let item = next(&mut rx).await;
        assert_eq!(line_text(&item), "fresh");
        assert!(matches!(
            item,
            FollowItem::Line {
                line_no: 1,
                byte_offset: 0,
                ..
            }
        ));

        std::fs::write(&path, "").unwrap();
        assert!(matches!(next(&mut rx).await, FollowItem::Reset { .. }));
        append(&path, "again\n");
        assert_eq!(line_text(&next(&mut rx).await), "again");
    }
}
