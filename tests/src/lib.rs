//! Support for end-to-end tests: the real `ivrstate` binary on a temporary store, a GLI client
//! over real TCP, and waiting on conditions with a deadline (never sleeping and hoping).

pub mod browser;
pub mod http;
pub mod nats;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails. Generous: CI machines
/// are slow and shared; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The repository root (for examples/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The folder of real captures (`../shared/real` beside the repository, or
/// `IVRSTATE_REAL_CAPTURES`), when present. Tests read them there; they are never copied into
/// the repository.
pub fn real_captures() -> Option<PathBuf> {
    let dir = std::env::var_os("IVRSTATE_REAL_CAPTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/real"));
    dir.is_dir().then_some(dir)
}

/// The binary and a temporary store directory.
pub struct Ivrstate {
    bin: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Ivrstate {
    pub fn new(bin: &str) -> Ivrstate {
        Ivrstate {
            bin: PathBuf::from(bin),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The binary with its temporary store directory inside `parent` (the benchmark's
    /// `--dir`: the disk it measures).
    pub fn in_dir(bin: &Path, parent: &Path) -> Ivrstate {
        Ivrstate {
            bin: bin.to_path_buf(),
            dir: tempfile::tempdir_in(parent).expect("tempdir"),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// A path inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--db")
            .arg(self.db())
            .env_remove("IVRSTATE_DB")
            .env("NO_COLOR", "1");
        c
    }

    /// Runs to completion and returns the output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run ivrstate")
    }

    /// Runs, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ivrstate {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs with `input` on stdin, asserts success, returns stdout.
    pub fn ok_with_stdin(&self, args: &[&str], input: &[u8]) -> String {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ivrstate");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "ivrstate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Writes `ivrstate simulate ARGS` into the file `name` of the temporary directory and
    /// returns its path as a string (for the next command's arguments).
    pub fn simulate_to(&self, name: &str, args: &[&str]) -> String {
        let mut all = vec!["simulate"];
        all.extend_from_slice(args);
        let path = self.path(name);
        std::fs::write(&path, self.ok(&all)).expect("write the simulated log");
        path.display().to_string()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("ivrstate {args:?}: not JSON ({e}): {out}"))
    }

    /// `serve` with GLI and the feed on free loopback ports, and `extra` arguments.
    pub fn serve(&self, extra: &[&str]) -> Running {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--feed-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        self.spawn(&args)
    }

    /// Starts `serve` (or any long-running command) and waits for the line announcing an
    /// address: `<label> listening on ADDR`.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut child = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ivrstate");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Running {
            child,
            stdout,
            addrs: Vec::new(),
        }
    }
}

/// A running `ivrstate` process, killed when dropped.
pub struct Running {
    pub child: Child,
    stdout: BufReader<ChildStdout>,
    addrs: Vec<(String, SocketAddr)>,
}

impl Running {
    /// Reads stdout lines until one says `<label> listening on <addr>`.
    pub fn addr(&mut self, label: &str) -> SocketAddr {
        if let Some((_, a)) = self.addrs.iter().find(|(l, _)| l == label) {
            return *a;
        }
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read serve stdout");
            assert!(
                n > 0,
                "ivrstate exited before announcing `{label} listening on`"
            );
            if let Some((l, rest)) = line.trim().split_once(" listening on ") {
                let addr: SocketAddr = rest.trim().parse().expect("address");
                self.addrs.push((l.to_owned(), addr));
                if l == label {
                    return addr;
                }
            }
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        wait_for("ivrstate to exit after SIGTERM", || {
            self.child.try_wait().ok().flatten()
        })
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GLI client: 6-byte frames around GctiMsg XML, as an IVR driver sends them.
pub struct Gli {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

pub const DATA: u8 = 3;
pub const KEEPALIVE_REQUEST: u8 = 0;
pub const KEEPALIVE_RESPONSE: u8 = 1;
pub const ERROR: u8 = 2;

pub fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = (body.len() + 2) as u16;
    let mut out = vec![0, kind];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[2, 0]);
    out.extend_from_slice(body);
    out
}

/// A GctiMsg with the usual prolog.
pub fn gcti(call_id: &str, inner: &str) -> String {
    format!("<?xml version='1.0' encoding='iso-8859-1'?><!DOCTYPE GctiMsg SYSTEM 'IServer.dtd'><GctiMsg><CallId>{call_id}</CallId>{inner}</GctiMsg>")
}

impl Gli {
    pub fn connect(addr: SocketAddr) -> Gli {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Gli {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The client's own address, as the server sees it.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    pub fn send(&mut self, call_id: &str, inner: &str) {
        let body = gcti(call_id, inner);
        self.send_raw(&frame(DATA, body.as_bytes()));
    }

    /// The next frame: (type, body). Panics after the deadline; None if the server closed.
    pub fn recv_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        self.recv_frame_within(DEADLINE)
    }

    pub fn recv_frame_within(&mut self, limit: Duration) -> Option<(u8, Vec<u8>)> {
        let start = Instant::now();
        loop {
            if self.buf.len() >= 4 {
                let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
                if self.buf.len() >= 4 + len {
                    let kind = self.buf[1];
                    let body = self.buf[6..4 + len].to_vec();
                    self.buf.drain(..4 + len);
                    return Some((kind, body));
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    assert!(
                        start.elapsed() < limit,
                        "no frame from the server within {limit:?}"
                    );
                }
                Err(_) => return None,
            }
        }
    }

    /// The next Data frame's XML as a string (ISO-8859-1 decoded).
    pub fn recv_xml(&mut self) -> String {
        loop {
            let (kind, body) = self.recv_frame().expect("server closed the connection");
            if kind == DATA {
                return body.iter().map(|&b| b as char).collect();
            }
        }
    }

    /// Receives messages until one contains `needle`; returns it.
    pub fn recv_until(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let xml = self.recv_xml();
            if xml.contains(needle) {
                return xml;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no message containing {needle:?}"
            );
        }
    }

    /// Logs in and returns the LoginResp XML.
    pub fn login(&mut self, call_id: &str, client: &str, version: &str, monitor: bool) -> String {
        let monitor = if monitor { " ServerMonitor='set'" } else { "" };
        self.send(
            call_id,
            &format!("<LoginReq Version='{version}' ClientName='{client}'{monitor}/>"),
        );
        let resp = self.recv_until("LoginResp");
        // The IVR Server follows a 4.0 client's LoginResp OK or InitInProgress with this.
        let status = attr(&resp, "Status");
        if version == "4.0" && matches!(status.as_deref(), Some("OK" | "InitInProgress")) {
            let flow = self.recv_xml();
            assert!(
                flow.contains("<FlowControl Status='Off'/>"),
                "expected FlowControl Off after the LoginResp, got {flow}"
            );
        }
        resp
    }

    /// True when the server has closed the connection (reads EOF within the deadline).
    pub fn closed(&mut self) -> bool {
        let start = Instant::now();
        loop {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if start.elapsed() > DEADLINE {
                        return false;
                    }
                }
                Err(_) => return true,
            }
        }
    }
}

/// An XML attribute's value in a message (`attr(xml, "Status")`), for assertions.
pub fn attr(xml: &str, name: &str) -> Option<String> {
    for quote in ['\'', '"'] {
        let pat = format!(" {name}={quote}");
        if let Some(at) = xml.find(&pat) {
            let rest = &xml[at + pat.len()..];
            return rest.find(quote).map(|end| rest[..end].to_owned());
        }
    }
    None
}

// ---- crash, corruption and disk-trouble support (tests/e2e/crash.rs) ------------------------

/// A small deterministic generator (splitmix64): the same seed gives the same kill moments.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// How a process started by [`run_and_kill_after`] ended.
#[derive(Debug)]
pub enum Ended {
    /// SIGKILLed while still running.
    Killed,
    /// It finished on its own before the moment came, after this long.
    Exited(std::process::ExitStatus, Duration),
}

/// Starts `cmd`, polls it, and SIGKILLs it once `delay` has passed (unless it exited first).
/// Returns how it ended and what it wrote on stderr.
pub fn run_and_kill_after(mut cmd: Command, delay: Duration) -> (Ended, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let ended = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Ended::Exited(status, start.elapsed());
        }
        let elapsed = start.elapsed();
        if elapsed >= delay {
            let _ = child.kill();
            break Ended::Killed;
        }
        std::thread::sleep((delay - elapsed).min(Duration::from_millis(1)));
    };
    let out = child.wait_with_output().expect("wait");
    (ended, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `export` as JSON values without the `recorded` and `source` fields (when and by whom a
/// record was written: what two runs over the same input may differ in).
pub fn exported_events(t: &Ivrstate) -> Vec<serde_json::Value> {
    t.ok(&["export"])
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).expect("export line");
            // When and by whom a record was written is not part of the event.
            if let Some(o) = v.as_object_mut() {
                o.remove("recorded");
                o.remove("source");
            }
            v
        })
        .collect()
}

/// Asserts that a command that failed did so as docs/interface.md says: exit 1 (not a panic's 101,
/// not a signal), never "panicked", and a last stderr line `error: ...`. Returns that line.
pub fn assert_clean_failure(args: &[&str], out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "ivrstate {args:?} panicked:\n{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "ivrstate {args:?} should fail with exit 1:\n{stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("error: "),
        "ivrstate {args:?}: the error is not one `error:` line:\n{stderr}"
    );
    last
}

/// Every file under `dir` with its bytes, for "left untouched" checks.
pub fn files_of(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                out.insert(path.strip_prefix(dir).expect("prefix").to_path_buf(), bytes);
            }
        }
    }
    out
}

/// Copies a directory tree (a store) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for (rel, bytes) in files_of(from) {
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(dest, bytes).expect("write");
    }
}

/// Writes the store's format version record directly with sled, as a newer ivrstate would.
pub fn set_format_version(db: &Path, version: u32) {
    let sled = sled::Config::new()
        .path(db)
        .open()
        .expect("open the store with sled");
    sled.open_tree("meta")
        .expect("meta tree")
        .insert(b"format_version", &version.to_be_bytes())
        .expect("write format_version");
    sled.flush().expect("flush");
}

/// Writes `key` = `value` into the engine's derived tree directly with sled, as damage would.
pub fn put_derived(db: &Path, key: &[u8], value: &[u8]) {
    let sled = sled::Config::new()
        .path(db)
        .open()
        .expect("open the store with sled");
    sled.open_tree("derived:derived")
        .expect("derived tree")
        .insert(key, value)
        .expect("write");
    sled.flush().expect("flush");
}

/// A store's trees by name, each with its (key, value) entries.
pub type Trees = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

/// Every tree of a store with its entries, read with sled directly: the store's logical
/// content, for "left untouched" checks (sled itself may rewrite its files when it opens them).
pub fn trees_of(db: &Path) -> Trees {
    let sled = sled::Config::new()
        .path(db)
        .open()
        .expect("open the store with sled");
    sled.tree_names()
        .into_iter()
        .map(|name| {
            let tree = sled.open_tree(&name).expect("tree");
            let entries = tree
                .iter()
                .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("entry"))
                .collect();
            (name.to_vec(), entries)
        })
        .collect()
}

/// An NDJSON line (the `export` format) for agent `dn`'s state change on T-Server `TS_SIP`
/// (`kind`: `Login`, `Ready`, `NotReady`...); `time` as JSON: seconds, or a quoted timestamp.
pub fn agent_line(source_seq: u64, time: &str, dn: &str, agent: &str, kind: &str) -> String {
    let work_mode = if kind == "NotReady" {
        "\"AuxWork\""
    } else {
        "\"ManualIn\""
    };
    format!(
        r#"{{"time":{time},"recorded":{time},"event":{{"TLib":{{"tserver":"TS_SIP","source_seq":{source_seq},"kind":{{"Agent":{{"kind":"{kind}","dn":"{dn}","agent_id":"{agent}","queue":null,"work_mode":{work_mode},"reasons":[],"extensions":[]}}}}}}}}}}"#
    )
}

/// A connection to `serve --feed-listen` that writes lines and waits for their
/// acknowledgement.
pub struct Feed {
    stream: TcpStream,
    acks: BufReader<TcpStream>,
    /// Lines acknowledged so far (the server's running count).
    pub committed: u64,
}

impl Feed {
    pub fn connect(addr: SocketAddr) -> Feed {
        let stream = TcpStream::connect(addr).expect("connect to the feed");
        let acks = BufReader::new(stream.try_clone().expect("clone the feed socket"));
        Feed {
            stream,
            acks,
            committed: 0,
        }
    }

    /// Writes `lines` and waits until the server acknowledged every line written so far.
    pub fn send(&mut self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        self.stream
            .write_all(text.as_bytes())
            .expect("write to the feed");
        let want = self.committed + lines.len() as u64;
        while self.committed < want {
            let mut ack = String::new();
            let n = self.acks.read_line(&mut ack).expect("read a feed ack");
            assert!(n > 0, "the feed closed the connection");
            let v: serde_json::Value = serde_json::from_str(ack.trim())
                .unwrap_or_else(|e| panic!("feed ack {ack:?}: {e}"));
            self.committed = v["committed"]
                .as_u64()
                .unwrap_or_else(|| panic!("not an ack: {ack}"));
        }
    }
}
