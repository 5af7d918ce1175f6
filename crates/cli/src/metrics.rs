//! Prometheus text metrics for `serve --metrics ADDR`: counters kept with atomics by the
//! appender and sources, plus the hub's client counts, rendered on any HTTP GET.

use ivrstate_ingest::SourceCounters;
use ivrstate_publisher::hub::Hub;
use ivrstate_store::Store;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds (seconds) of the commit latency histogram buckets.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Default)]
pub struct Metrics {
    /// What the followers and feed connections read.
    pub sources: Arc<SourceCounters>,
    appended: AtomicU64,
    duplicates: AtomicU64,
    commits: AtomicU64,
    commit_us_sum: AtomicU64,
    commit_buckets: [AtomicU64; BUCKETS.len()],
    /// The store, once the appender has opened it: its size is read when scraped (a walk of
    /// its directory), not after every commit.
    store: OnceLock<Store>,
    /// Cluster mode: the last stream sequence applied to this node's store (and the log's last
    /// seq then), so that an operator (and the cluster tests) can see a node catch up.
    stream_applied: AtomicU64,
    log_applied: AtomicU64,
    cluster: std::sync::atomic::AtomicBool,
}

impl Metrics {
    pub fn committed(&self, appended: u64, duplicates: u64, took: Duration) {
        self.appended.fetch_add(appended, Relaxed);
        self.duplicates.fetch_add(duplicates, Relaxed);
        self.commits.fetch_add(1, Relaxed);
        self.commit_us_sum
            .fetch_add(took.as_micros() as u64, Relaxed);
        let secs = took.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.commit_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Relaxed);
            }
        }
    }

    /// Cluster mode: the stream is applied through `stream_seq`; the log ends at `log_seq`.
    pub fn stream_applied(&self, stream_seq: u64, log_seq: u64) {
        self.cluster.store(true, Relaxed);
        self.stream_applied.store(stream_seq, Relaxed);
        self.log_applied.store(log_seq, Relaxed);
    }

    pub fn attach_store(&self, store: Store) {
        let _ = self.store.set(store);
    }

    pub fn render(&self, hub: &Hub) -> String {
        let store_bytes = self.store.get().map_or(0, Store::size_on_disk);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "ivrstate_events_ingested_total",
            "Events parsed from sources.",
            self.sources.ingested(),
        );
        counter(
            "ivrstate_events_appended_total",
            "Events appended to the log.",
            self.appended.load(Relaxed),
        );
        counter(
            "ivrstate_events_duplicate_total",
            "Events already stored, not appended again.",
            self.duplicates.load(Relaxed),
        );
        counter(
            "ivrstate_input_malformed_total",
            "Malformed printouts or lines.",
            self.sources.malformed(),
        );
        counter(
            "ivrstate_input_skipped_total",
            "Printouts that carry no state.",
            self.sources.skipped(),
        );
        let hub_metrics = hub.metrics();
        counter(
            "ivrstate_messages_sent_total",
            "GLI messages sent to clients.",
            hub_metrics.messages_sent,
        );
        counter(
            "ivrstate_queue_drops_total",
            "Clients disconnected because their queue was full.",
            hub_metrics.queue_drops,
        );
        counter(
            "ivrstate_connections_refused_total",
            "Connections refused over the limit.",
            hub_metrics.refused,
        );
        let _ = writeln!(
            out,
            "# HELP ivrstate_commit_seconds Time to append, flush and fold one group commit."
        );
        let _ = writeln!(out, "# TYPE ivrstate_commit_seconds histogram");
        for (bound, count) in BUCKETS.iter().zip(&self.commit_buckets) {
            let _ = writeln!(
                out,
                "ivrstate_commit_seconds_bucket{{le=\"{bound}\"}} {}",
                count.load(Relaxed)
            );
        }
        let commits = self.commits.load(Relaxed);
        let _ = writeln!(
            out,
            "ivrstate_commit_seconds_bucket{{le=\"+Inf\"}} {commits}"
        );
        let _ = writeln!(
            out,
            "ivrstate_commit_seconds_sum {}",
            self.commit_us_sum.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "ivrstate_commit_seconds_count {commits}");
        let _ = writeln!(out, "# HELP ivrstate_clients_connected GLI connections open.\n# TYPE ivrstate_clients_connected gauge");
        let _ = writeln!(out, "ivrstate_clients_connected {}", hub_metrics.connected);
        let _ = writeln!(out, "# HELP ivrstate_clients_logged_in GLI clients logged in, per IVR.\n# TYPE ivrstate_clients_logged_in gauge");
        for (ivr, n) in &hub_metrics.logged_in {
            let _ = writeln!(
                out,
                "ivrstate_clients_logged_in{{ivr=\"{}\"}} {n}",
                ivr.as_str().replace(['"', '\\', '\n'], "_")
            );
        }
        let _ = writeln!(out, "# HELP ivrstate_store_bytes Bytes the store occupies on disk.\n# TYPE ivrstate_store_bytes gauge");
        let _ = writeln!(out, "ivrstate_store_bytes {store_bytes}");
        if self.cluster.load(Relaxed) {
            let _ = writeln!(out, "# HELP ivrstate_stream_applied Last stream sequence applied to this node's store.\n# TYPE ivrstate_stream_applied gauge");
            let _ = writeln!(
                out,
                "ivrstate_stream_applied {}",
                self.stream_applied.load(Relaxed)
            );
            let _ = writeln!(out, "# HELP ivrstate_log_seq The log's last seq after that.\n# TYPE ivrstate_log_seq gauge");
            let _ = writeln!(out, "ivrstate_log_seq {}", self.log_applied.load(Relaxed));
        }
        out
    }
}

/// Answers every connection with the current metrics (a minimal HTTP/1.1 responder: scrapers
/// send one GET and read until close).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, hub: Arc<Hub>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let body = metrics.render(&hub);
        tokio::spawn(async move {
            let mut request = [0u8; 2048];
            // Read the request head (bounded); its content does not matter.
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
