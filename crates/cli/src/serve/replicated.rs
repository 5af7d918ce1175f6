//! `serve --cluster`: the sources publish into the stream, and the appender thread applies the
//! stream into this node's store.
//!
//! Every source (followed files, feed connections, recorded client requests) still hands its
//! batches to a job queue, but the jobs are published ([`publish_jobs`]) and acknowledged once
//! JetStream has them on a quorum. The node's store changes only by applying the stream in
//! order ([`apply`]): the same log, dedup and fold as a single node, from the same messages in
//! the same order, so every node's log, state and answers are the same. A client hears of a
//! change only after this node's append of it is durable (the same `commit` as a single node).

use super::{commit, derive_and_answer};
use crate::{open_engine, DurabilityArg};
use anyhow::{Context, Result};
use ivrstate_cluster::consume::Delivery;
use ivrstate_cluster::presence::Held;
use ivrstate_cluster::publish::Pipeline;
use ivrstate_cluster::replica::{Replica, ToAppend};
use ivrstate_cluster::Cluster;
use ivrstate_engine::Engine;
use ivrstate_http::{EngineQuery, EventHub, Metrics};
use ivrstate_ingest::appender::{Committed, Job, MAX_COMMIT};
use ivrstate_projection::Applied;
use ivrstate_publisher::hub::Hub;
use ivrstate_store::SourceRun;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Stream messages decoded ahead of the appender, at most.
pub const QUEUED_MESSAGES: usize = 256;

/// Publishes each job and acknowledges it once JetStream acknowledged all of it (many jobs in
/// flight at once; the pipeline keeps their order).
/// The T-Servers published are noted in `held`, which this node's presence announces (see
/// `ivrstate_cluster::presence`).
pub async fn publish_jobs(cluster: Cluster, mut jobs: mpsc::Receiver<Job>, held: Held) {
    let pipeline = Pipeline::start(&cluster);
    while let Some(job) = jobs.recv().await {
        if job.envelopes.is_empty() {
            continue;
        }
        held.saw(&job.envelopes);
        let published = pipeline
            .publish(
                &cluster.config.stream,
                &job.envelopes,
                &job.source,
                &job.lines,
            )
            .await;
        let ack = job.ack;
        match published {
            Ok(rx) => {
                tokio::spawn(async move {
                    let result = match rx.await {
                        Ok(p) => Ok(Committed {
                            new: p.new,
                            duplicates: p.duplicates,
                        }),
                        Err(_) => Err("the publishing task stopped".to_owned()),
                    };
                    if let Some(ack) = ack {
                        let _ = ack.send(result);
                    }
                });
            }
            Err(e) => {
                tracing::error!("cannot publish: {e}");
                if let Some(ack) = ack {
                    let _ = ack.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// What the appender thread works with in cluster mode.
pub struct Replicating {
    pub db: PathBuf,
    pub durability: DurabilityArg,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// The stream's last sequence when serve started: logins get InitInProgress until the
    /// node has applied it.
    pub target: u64,
    /// Questions of the HTTP API, for the engine thread (started once caught up).
    pub queries: mpsc::Receiver<EngineQuery>,
    /// Where state changes go for SSE readers (with `--http`).
    pub events: Option<Arc<EventHub>>,
    /// serve's runtime: the engine thread waits on its channels through it.
    pub runtime: tokio::runtime::Handle,
}

/// The engine thread, as in single-node serve ([`derive_and_answer`]), and how to stop it.
type EngineThread = (std::thread::JoinHandle<Result<()>>, oneshot::Sender<()>);

fn start_engine(
    engine: &'static mut Engine,
    queries: mpsc::Receiver<EngineQuery>,
    runtime: tokio::runtime::Handle,
) -> Result<EngineThread> {
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || derive_and_answer(engine, queries, stopped, &runtime))
        .context("starting the engine thread")?;
    Ok((thread, stop))
}

/// The appender thread of a cluster node: opens the store and its checkpoint, tells the
/// consumer where to start (`start`), then applies what it delivers, in order, until the
/// consumer is gone.
///
/// While catching up the engine stays on this thread: durable appends only, then the fold and
/// derived data in one pass. Once caught up, the engine goes to the engine thread (derived data
/// and the HTTP API's queries, as in single-node serve) and this thread commits each delivery
/// with the same `commit` as a single node: log, hub, GLI pushes, SSE.
pub fn apply(
    ctx: Replicating,
    mut deliveries: mpsc::Receiver<Delivery>,
    start: oneshot::Sender<u64>,
    ready: oneshot::Sender<Result<(), String>>,
) -> Result<()> {
    let Replicating {
        db,
        durability,
        hub,
        metrics,
        target,
        queries,
        events,
        runtime,
    } = ctx;
    let opened = open_engine(&db, durability).and_then(|engine| {
        let replica = Replica::open(engine.store())?;
        Ok((engine, replica))
    });
    let (engine, mut replica) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let message = format!("{e:#}");
            let _ = ready.send(Err(message.clone()));
            return Err(anyhow::anyhow!(message));
        }
    };
    let log = engine.log().clone();
    let store = engine.store().clone();
    hub.update(|state| state.clone_from(engine.state()));
    metrics.attach_store(store.clone());
    metrics.stream_applied(replica.checkpoint().stream_seq, log.last_seq());
    // The engine while it is on this thread (catching up); None once it is on its own.
    let mut catching_up = Some((engine, queries));
    let mut engine_thread = None;
    if replica.checkpoint().stream_seq >= target {
        if let Some((engine, queries)) = catching_up.take() {
            engine_thread = Some(start_engine(engine, queries, runtime.clone())?);
        }
    }
    hub.set_ready(catching_up.is_none());
    let _ = ready.send(Ok(()));
    let _ = start.send(replica.next_stream_seq());
    tracing::info!(
        seq = log.last_seq(),
        applied = replica.checkpoint().stream_seq,
        target,
        "store open; applying the stream"
    );

    let mut applied = Applied::new();
    while let Some(first) = deliveries.blocking_recv() {
        // Everything delivered by now goes into one append (one flush).
        let mut total = first.envelopes.len();
        let mut batch = vec![first];
        while total < MAX_COMMIT {
            match deliveries.try_recv() {
                Ok(d) => {
                    total += d.envelopes.len();
                    batch.push(d);
                }
                Err(_) => break,
            }
        }
        let ToAppend {
            envelopes,
            sources,
            last,
        } = replica.to_append_from(&batch)?;
        // Where each message said its envelopes came from.
        let sources: Vec<SourceRun<'_>> = sources
            .iter()
            .map(|(count, source, lines)| SourceRun {
                count: *count,
                source,
                lines,
            })
            .collect();
        let log_seq = if envelopes.is_empty() {
            log.last_seq()
        } else if catching_up.is_none() {
            commit(
                &log,
                &hub,
                &metrics,
                events.as_deref(),
                &envelopes,
                &sources,
                &mut applied,
            )?
            .last_seq
        } else {
            // Catching up: nobody is logged in (logins get InitInProgress), so durable appends
            // only; the fold and derived data follow in one pass when caught up (about five
            // times faster than folding after every append).
            log.append_from(&envelopes, &sources)?.last_seq
        };
        replica.applied(&store, last, log_seq)?;
        metrics.stream_applied(last, log_seq);
        if last >= target {
            if let Some((engine, queries)) = catching_up.take() {
                engine.catch_up(|_, _| {})?;
                hub.update(|state| state.clone_from(engine.state()));
                engine_thread = Some(start_engine(engine, queries, runtime.clone())?);
                hub.set_ready(true);
                tracing::info!(applied = last, "caught up with the stream; serving");
            }
        }
    }
    let stopped = match engine_thread {
        Some((thread, stop)) => {
            let _ = stop.send(());
            match thread.join() {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!("the engine thread panicked")),
            }
        }
        None => Ok(()),
    };
    store.flush()?;
    stopped
}
