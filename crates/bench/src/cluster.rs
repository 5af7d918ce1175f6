//! `cluster` (issue 14): cluster mode against its own 3 real `nats-server` nodes (JetStream,
//! `sync_interval: always`, the stream R3 on file storage), run with `--cluster-only`.
//!
//! - `ingest_events_per_s`: what `ingest --cluster` does: the simulated T-Server log parsed and
//!   published in messages of 4096 events, many acknowledgements outstanding, timed until
//!   JetStream acknowledged the last one.
//! - `catch_up_events_per_s`: what a new `serve --cluster` node does: an empty store applies
//!   the whole stream (consumer, decode, durable appends of up to 8000 events with their
//!   checkpoint, then the fold and derived data in one pass), timed until both are done.
//! - `change_p50_ms`/`change_p99_ms`: one event published by node A's publisher until node B
//!   has appended it durably and folded it (the moment B's hub would push it to its GLI
//!   clients), one change at a time, in this process.
//! - `gli_change_*`: the whole path between real processes, a T-Server feed into node A until a
//!   GLI client of node B decoded the push (see [`gli`]).

pub mod gli;

use crate::end_to_end;
use anyhow::{Context, Result};
use ivrstate_cluster::consume::{consume, Delivery};
use ivrstate_cluster::publish::{Pipeline, MAX_MESSAGE_RECORDS};
use ivrstate_cluster::replica::Replica;
use ivrstate_cluster::{Cluster, ClusterConfig};
use ivrstate_engine::Engine;
use ivrstate_ingest::appender::MAX_COMMIT;
use ivrstate_ingest::parse::{Parsed, TlogReader};
use ivrstate_model::{Envelope, Event, Micros, TLibEvent, TLibKind, TServerName};
use ivrstate_store::StoreOptions;
use ivrstate_tests::nats::{nats_server, NatsCluster};
use std::io::BufReader;
use std::path::Path;
use std::time::Instant;
use tokio::sync::mpsc;

const STREAM: &str = "BENCH";

/// The measured figures.
pub struct Figures {
    pub events: u64,
    pub ingest_events_per_s: f64,
    pub catch_up_events_per_s: f64,
    pub change_p50_ms: f64,
    pub change_p99_ms: f64,
    pub gli: gli::Figures,
}

/// Runs the scenario with `events` simulated events, `changes` single-event changes, then the
/// feed-to-GLI changes of `gli_plan`.
pub fn run(work: &Path, events: u64, changes: usize, gli_plan: gli::Plan) -> Result<Figures> {
    let bin = nats_server().map_err(|e| anyhow::anyhow!("no nats-server: {e}"))?;
    let nats = NatsCluster::start(&bin, 3);
    let log = end_to_end::simulate_log(work, events)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = ClusterConfig::parse(&nats.urls(), STREAM)?;

    // ingest --cluster.
    let (published, ingest_secs) = runtime.block_on(async {
        let cluster = Cluster::connect(config.clone()).await?;
        let pipeline = Pipeline::start(&cluster);
        let file = std::fs::File::open(&log).with_context(|| format!("opening {log:?}"))?;
        let reader = TlogReader::new(
            BufReader::with_capacity(1 << 16, file),
            "cluster.log",
            None,
            Micros(0),
        );
        let started = Instant::now();
        let mut batch = Vec::with_capacity(MAX_MESSAGE_RECORDS);
        let mut waiting = Vec::new();
        let mut published = 0u64;
        for parsed in reader {
            if let Parsed::Event { envelope: e, .. } = parsed {
                batch.push(e);
                if batch.len() == MAX_MESSAGE_RECORDS {
                    waiting.push(pipeline.publish(STREAM, &batch, "bench", &[]).await?);
                    batch.clear();
                }
            }
        }
        if !batch.is_empty() {
            waiting.push(pipeline.publish(STREAM, &batch, "bench", &[]).await?);
        }
        for w in waiting {
            published += w.await?.new;
        }
        anyhow::Ok((published, started.elapsed().as_secs_f64()))
    })?;
    let _ = std::fs::remove_file(&log);

    // A new node catching up.
    let store_dir = work.join("cluster-node-b");
    let mut engine = Engine::open(&store_dir, StoreOptions::default())?;
    let mut replica = Replica::open(engine.store())?;
    let (tx, mut rx) = mpsc::channel::<Delivery>(256);
    let target = runtime.block_on(async {
        let cluster = Cluster::connect(config.clone()).await?;
        let target = cluster.last_sequence().await;
        runtime.spawn(consume(cluster, replica.next_stream_seq(), tx));
        anyhow::Ok(target)
    })?;
    let started = Instant::now();
    let mut applied = 0u64;
    // As `serve --cluster` does: while catching up, durable appends only (logins get
    // InitInProgress, nobody is pushed to), the fold and derived data once caught up; after
    // that every change is appended and folded at once.
    let mut apply = |engine: &mut Engine,
                     replica: &mut Replica,
                     batch: Vec<Delivery>,
                     catching_up: bool|
     -> Result<u64> {
        let (envelopes, last) = replica.to_append(&batch)?;
        let report = if catching_up {
            engine.log().append(&envelopes)?
        } else {
            engine.append(&envelopes, |_, _| {})?
        };
        replica.applied(engine.store(), last, report.last_seq)?;
        applied += report.appended;
        Ok(last)
    };
    let mut last = 0;
    while last < target {
        let first = rx.blocking_recv().context("the consumer stopped")?;
        let mut total = first.envelopes.len();
        let mut batch = vec![first];
        while total < MAX_COMMIT {
            match rx.try_recv() {
                Ok(d) => {
                    total += d.envelopes.len();
                    batch.push(d);
                }
                Err(_) => break,
            }
        }
        last = apply(&mut engine, &mut replica, batch, true)?;
    }
    engine.catch_up(|_, _| {})?;
    let catch_up_secs = started.elapsed().as_secs_f64();

    // A -> B: one change at a time, from publish to B's durable append and fold.
    let mut latencies = Vec::with_capacity(changes);
    let publisher = runtime.block_on(async {
        let cluster = Cluster::connect(config.clone()).await?;
        anyhow::Ok(Pipeline::start(&cluster))
    })?;
    for i in 0..changes {
        let envelope = Envelope {
            time: Micros(1_700_000_000_000_000 + i as i64),
            recorded: Micros(1_700_000_000_000_000),
            event: Event::TLib(TLibEvent {
                tserver: TServerName::from("TS_BENCH"),
                source_seq: Some(i as u64 + 1),
                kind: if i & 1 == 0 {
                    TLibKind::LinkConnected
                } else {
                    TLibKind::LinkDisconnected
                },
            }),
        };
        let sent = Instant::now();
        let _ack = runtime.block_on(publisher.publish(STREAM, &[envelope], "bench", &[]))?;
        let delivery = rx.blocking_recv().context("the consumer stopped")?;
        apply(&mut engine, &mut replica, vec![delivery], false)?;
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    drop(publisher);
    let gli = gli::run(work, &nats.urls(), &runtime, gli_plan)?;
    let figures = Figures {
        events: published,
        ingest_events_per_s: published as f64 / ingest_secs,
        catch_up_events_per_s: applied.saturating_sub(changes as u64) as f64 / catch_up_secs,
        change_p50_ms: pct(0.5),
        change_p99_ms: pct(0.99),
        gli,
    };
    drop(nats);
    Ok(figures)
}
