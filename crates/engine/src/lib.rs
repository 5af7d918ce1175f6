//! The engine joins the store (ingest) and the fold (projection).
//!
//! The log is the only truth; everything in the derived tree is recomputable from it:
//!
//! - history (see `history.rs`): agent states in chunks per DN (`C`, bytes in `chunk.rs`), the
//!   DNs each agent id used (`A`), chunk bytes in pack files beside sled (see `packs.rs`),
//!   server and port states one
//!   entry per change (`T`); they answer `status --at`, because each entity is changed only by
//!   its own source, in order;
//! - `E` + entity -> () (the set of entities, so as-of knows what to look up);
//! - `N` + seq -> the whole `State` as bytes (snapshots, for `status --seq`);
//! - `M` `state` -> the `State` at `derived_seq` (open without folding);
//! - `M` `derived_seq` -> the last seq folded into the above.
//!
//! All of it lives in ONE sled tree so that each commit ends with one batch that moves
//! `derived_seq` (after its pack is durable); a commit writes its entries in several batches
//! before that one, behind a marker (`Mcommitting`) that makes open derive everything again if
//! a crash interrupted it. After a crash the derived data is therefore exactly what some prefix
//! of the log gives, and catch-up continues from there.

pub mod bulk;
mod chunk;
pub mod config;
mod history;
mod keys;
mod packs;
mod views;

pub use config::{Config, ConfigError};
pub use ivrstate_projection::{AgentAudit, Bucket, Interval, IntervalRow, LoginSession, Step};
pub use views::{AgentView, PortView, ServerView, StatusView};

use history::{Deriver, EntityState};
use ivrstate_model::{
    AgentId, ConfigEvent, Dn, Envelope, Event, IvrName, Micros, PortNum, Record, Seq, TServerName,
};
use ivrstate_projection::{Applied, Change, EntityKey, State};
use ivrstate_store::{
    AppendReport, DerivedBatch, DerivedTree, EventLog, SourceRun, Store, StoreError, StoreOptions,
};
use packs::Packs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

/// A snapshot of the whole state every this many seqs.
const SNAPSHOT_EVERY: Seq = 1 << 18;
/// Records folded per atomic batch of derived entries (a commit): each commit also rewrites
/// the chunks still filling, so commits are few and large.
const COMMIT_EVERY: Seq = 1 << 22;
/// A catch-up that folded at least this many records leaves the state it reached, so that the
/// next open starts from it instead of folding up to a snapshot's worth of records again.
const STATE_AFTER: Seq = 16_384;
const DERIVED_TREE: &str = "derived";
const DERIVED_SEQ_KEY: &[u8] = b"Mderived_seq";
/// The state at `derived_seq`, when the last catch-up left it (see [`STATE_AFTER`]).
const STATE_KEY: &[u8] = b"Mstate";
/// Present while a commit writes its entries (see [`Staged`]): found on open, it means a commit
/// was interrupted, and derived data is derived again from the log.
const COMMITTING_KEY: &[u8] = b"Mcommitting";
/// Entries per sled batch while a commit writes: sled copies a leaf for every insert and frees
/// the old copies only when the batch ends, so one batch of a whole commit's ~40 k entries held
/// hundreds of MB (issue 13's memory profile).
const SLED_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("derived data is damaged: {0} (run `ivrstate rebuild`)")]
    Derived(String),
    #[error("{0}")]
    Query(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// A past window as IVR clients saw it: see [`Engine::replay_window`].
pub struct ReplayWindow {
    /// The state at the start of the window.
    pub start: State,
    /// The window's records, oldest first (by event time, then seq).
    pub records: Vec<Record>,
}

/// Which agent-state history to show.
#[derive(Clone, Debug)]
pub enum HistorySelector {
    Agent(AgentId),
    Dn {
        dn: Dn,
        tserver: Option<TServerName>,
    },
    Port {
        ivr: IvrName,
        port: PortNum,
    },
}

pub struct Engine {
    store: Store,
    derived: DerivedTree,
    state: State,
    entities: BTreeSet<Vec<u8>>,
    applied: Applied,
    deriver: Deriver,
    packs: Packs,
}

impl Engine {
    /// Opens (creating or migrating) the store in `dir` and brings derived data up to the log.
    /// Damaged derived data is an error here (`ivrstate rebuild` repairs it).
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Engine> {
        let mut engine = Engine::open_without_derived(dir, options)?;
        // A damaged log ends early: answering from it would silently leave records out, and
        // derived data would look ahead of it and be thrown away. `verify` says where.
        if let Some(why) = engine.store.log().damaged() {
            std::mem::forget(engine);
            return Err(ivrstate_store::StoreError::Damaged(why).into());
        }
        match engine
            .load_derived()
            .and_then(|()| engine.catch_up(|_, _| {}))
        {
            Ok(()) => Ok(engine),
            Err(e) => {
                // Dropping sled flushes, and after an I/O error (a full disk) its flush waits
                // forever: the caller would hang instead of seeing the error. The handles are
                // leaked instead; the log itself is durable whatever happens here.
                std::mem::forget(engine);
                Err(e)
            }
        }
    }

    /// Opens the store without reading derived data: for [`Engine::verify_derived`] and
    /// [`Engine::rebuild`], which must work whatever state the derived data is in (damaged,
    /// truncated, missing, of another snapshot version). The state stays empty until
    /// [`Engine::rebuild`] or [`Engine::catch_up`].
    pub fn open_without_derived(dir: &Path, options: StoreOptions) -> Result<Engine> {
        let store = Store::open(dir, options)?;
        let derived = match store.derived(DERIVED_TREE) {
            Ok(derived) => derived,
            Err(e) => {
                // As in `open`: never drop sled after an error.
                std::mem::forget(store);
                return Err(e.into());
            }
        };
        Ok(Engine {
            store,
            derived,
            state: State::default(),
            entities: BTreeSet::new(),
            applied: Applied::default(),
            deriver: Deriver::default(),
            packs: Packs::new(dir),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn log(&self) -> &EventLog {
        self.store.log()
    }

    /// The state folded up to the last durable record.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The seq the derived data reflects.
    pub fn derived_seq(&self) -> Seq {
        self.state.last_seq()
    }

    /// Appends (dedup + group commit: returns after the flush) and folds what was appended.
    /// `on_change` sees every change the new records caused, in log order.
    pub fn append(
        &mut self,
        envelopes: &[Envelope],
        on_change: impl FnMut(&Record, &[Change]),
    ) -> Result<AppendReport> {
        self.append_from(envelopes, &[], on_change)
    }

    /// [`Engine::append`], saying where the envelopes came from (see
    /// [`EventLog::append_from`]).
    pub fn append_from(
        &mut self,
        envelopes: &[Envelope],
        sources: &[SourceRun<'_>],
        on_change: impl FnMut(&Record, &[Change]),
    ) -> Result<AppendReport> {
        let report = self.store.log().append_from(envelopes, sources)?;
        self.catch_up(on_change)?;
        Ok(report)
    }

    /// The seq the stored derived data says it reflects (0: none).
    fn stored_derived_seq(&self) -> Result<Seq> {
        match self.derived.get(DERIVED_SEQ_KEY)? {
            Some(bytes) => keys::read_seq(&bytes).ok_or_else(|| {
                EngineError::Derived(format!("derived_seq is not 8 bytes ({})", bytes.len()))
            }),
            None => Ok(0),
        }
    }

    fn load_derived(&mut self) -> Result<()> {
        let derived_seq = self.stored_derived_seq()?;
        if self.derived.get(COMMITTING_KEY)?.is_some() {
            // A commit was interrupted: some of its entries may be there, beyond derived_seq.
            tracing::warn!("derived data from an interrupted commit; deriving it again");
            return self.reset_derived();
        }
        if derived_seq > self.log().last_seq() {
            // Derived data ahead of the log cannot happen with one writer; if it does (a log
            // restored from an older copy), the derived data is recomputed rather than trusted.
            tracing::warn!(
                derived_seq,
                log = self.log().last_seq(),
                "derived data ahead of log; rebuilding"
            );
            return self.reset_derived();
        }
        self.packs.remove_after(Some(derived_seq))?;
        self.state = match self.stored_state(derived_seq)? {
            Some(state) => state,
            None => self.state_at_seq(derived_seq)?,
        };
        for entry in self.derived.scan_prefix(b"E") {
            let (key, _) = entry?;
            self.entities.insert(key[1..].to_vec());
        }
        Ok(())
    }

    /// The state the last catch-up left, if it is the state at `derived_seq`.
    fn stored_state(&self, derived_seq: Seq) -> Result<Option<State>> {
        let Some(bytes) = self.derived.get(STATE_KEY)? else {
            return Ok(None);
        };
        let state = State::from_bytes(&bytes)
            .map_err(|e| EngineError::Derived(format!("stored state: {e}")))?;
        Ok((state.last_seq() == derived_seq).then_some(state))
    }

    fn reset_derived(&mut self) -> Result<()> {
        self.derived.clear()?;
        self.packs.remove_after(None)?;
        self.state = State::default();
        self.entities.clear();
        self.deriver.clear();
        Ok(())
    }

    /// Drops all derived data and recomputes it from the log.
    pub fn rebuild(&mut self, progress: impl FnMut(Seq)) -> Result<()> {
        self.reset_derived()?;
        self.store.drop_derived()?;
        self.derived = self.store.derived(DERIVED_TREE)?;
        self.catch_up_with_progress(|_, _| {}, progress)
    }

    /// Folds every record after `derived_seq` and persists what it derived.
    pub fn catch_up(&mut self, on_change: impl FnMut(&Record, &[Change])) -> Result<()> {
        self.catch_up_with_progress(on_change, |_| {})
    }

    fn catch_up_with_progress(
        &mut self,
        mut on_change: impl FnMut(&Record, &[Change]),
        mut progress: impl FnMut(Seq),
    ) -> Result<()> {
        let last = self.log().last_seq();
        let first = self.state.last_seq() + 1;
        let mut next = first;
        while next <= last {
            let commit_end = last.min(next + COMMIT_EVERY - 1);
            let mut out = Staged {
                tree: self.derived.clone(),
                pending: 0,
                batch: DerivedBatch::new(),
                pack: if commit_end + 1 - next >= packs::PACK_FROM {
                    Some(self.packs.create(next)?)
                } else {
                    None
                },
                error: None,
            };
            let log = self.store.log().clone();
            let (state, applied, deriver) = (&mut self.state, &mut self.applied, &mut self.deriver);
            for_each_record(&log, next, commit_end, |record| {
                applied.clear();
                state.apply(record, applied);
                deriver.record(
                    state,
                    &mut self.entities,
                    &applied.touched,
                    record,
                    Some((&self.derived, &self.packs)),
                    &mut out,
                )?;
                on_change(record, &applied.changes);
                if record.seq % SNAPSHOT_EVERY == 0 {
                    out.insert(&snapshot_key(record.seq), &state.to_bytes());
                }
                out.check()
            })?;
            self.deriver.commit(&mut out);
            out.check()?;
            if let Some(pack) = out.pack {
                pack.finish()?;
            }
            let mut batch = out.batch;
            batch.remove(COMMITTING_KEY);
            batch.insert(DERIVED_SEQ_KEY, &keys::seq_key(commit_end));
            if commit_end == last && last + 1 - first >= STATE_AFTER {
                batch.insert(STATE_KEY, &self.state.to_bytes());
            }
            self.derived.apply_batch(batch)?;
            progress(commit_end);
            next = commit_end + 1;
        }
        Ok(())
    }

    /// The state right after record `seq` was folded: the nearest snapshot at or before it, then
    /// the records after it.
    pub fn state_at_seq(&self, seq: Seq) -> Result<State> {
        let seq = seq.min(self.log().last_seq());
        let snapshot = self
            .derived
            .range(snapshot_key(0)..=snapshot_key(seq))
            .next_back()
            .transpose()?;
        let mut state = match snapshot {
            Some((_, bytes)) => State::from_bytes(&bytes)
                .map_err(|e| EngineError::Derived(format!("snapshot: {e}")))?,
            None => State::default(),
        };
        let mut applied = Applied::state_only();
        if state.last_seq() < seq {
            for record in self.log().read(state.last_seq() + 1, seq) {
                applied.clear();
                state.apply(&record?, &mut applied);
            }
        }
        Ok(state)
    }

    /// Current state as the `status` view.
    pub fn status(&self) -> StatusView {
        views::from_state(&self.state, None)
    }

    /// State after record `seq`.
    pub fn status_at_seq(&self, seq: Seq) -> Result<StatusView> {
        Ok(views::from_state(&self.state_at_seq(seq)?, None))
    }

    /// The state at event time `at`, from the per-entity history: for every entity, its last
    /// transition at or before `at`. Cost: one reverse range lookup per entity.
    pub fn status_at(&self, at: Micros) -> Result<StatusView> {
        let mut servers = Vec::new();
        let mut ports = Vec::new();
        let mut agents = Vec::new();
        let mut seq = 0;
        for prefix in &self.entities {
            let Some(entity) = keys::decode_entity(prefix) else {
                return Err(EngineError::Derived("undecodable entity key".into()));
            };
            if let EntityKey::Agent(..) = entity {
                if let Some(agent) = history::agent_at(&self.derived, &self.packs, &entity, at)? {
                    seq = seq.max(agent.start_seq);
                    agents.push(views::agent(&agent));
                }
                continue;
            }
            match history::server_port_at(&self.derived, &entity, at)? {
                Some((s, EntityState::Server { name, state })) => {
                    seq = seq.max(s);
                    servers.push(views::server(&name, &state));
                }
                Some((s, EntityState::Port { ivr, port, state })) => {
                    seq = seq.max(s);
                    ports.push(views::port(&ivr, &port, &state));
                }
                None => {}
            }
        }
        Ok(views::from_parts(seq, Some(at), servers, ports, agents))
    }

    /// Agent-state intervals, oldest first, clipped to `[from, to]`. Cost: proportional to the
    /// selected agent's or DN's own history, not to the log.
    pub fn history(
        &self,
        selector: &HistorySelector,
        from: Option<Micros>,
        to: Option<Micros>,
    ) -> Result<Vec<Interval>> {
        let mut intervals = match selector {
            HistorySelector::Agent(id) => ivrstate_projection::intervals(
                history::by_agent(&self.derived, &self.packs, id)?,
                from,
                to,
            ),
            HistorySelector::Dn { dn, tserver } => {
                let mut out = Vec::new();
                for (ts, d) in self.agent_entities() {
                    if &d == dn && tserver.as_ref().is_none_or(|t| *t == ts) {
                        let entity = EntityKey::Agent(ts, d);
                        let states =
                            history::agent_states(&self.derived, &self.packs, &entity, from, to)?;
                        out.extend(ivrstate_projection::intervals(states, from, to));
                    }
                }
                out
            }
            HistorySelector::Port { ivr, port } => {
                let Some(p) = self.state.config().port(ivr.as_str(), port.as_str()) else {
                    return Err(EngineError::Query(format!(
                        "no port {ivr}:{port} in the current configuration (see `ivrstate config show`)"
                    )));
                };
                let entity = EntityKey::Agent(p.tserver.clone(), p.dn.clone());
                let states = history::agent_states(&self.derived, &self.packs, &entity, from, to)?;
                ivrstate_projection::intervals(states, from, to)
            }
        };
        intervals.sort_by_key(|i| (i.start, i.start_seq));
        Ok(intervals)
    }

    fn agent_entities(&self) -> impl Iterator<Item = (TServerName, Dn)> + '_ {
        self.entities
            .iter()
            .filter_map(|p| match keys::decode_entity(p) {
                Some(EntityKey::Agent(ts, dn)) => Some((ts, dn)),
                _ => None,
            })
    }

    /// Per agent: time in each status, logins, NotReady time by reason and work mode. Without
    /// `to`, open intervals count up to the newest event time folded (never the wall clock).
    pub fn audit(&self, from: Option<Micros>, to: Option<Micros>) -> Result<Vec<AgentAudit>> {
        let to = to.or(self.state.last_time());
        // A DN's intervals at a time, added up as they come: never all of them in memory.
        let mut audit = ivrstate_projection::Audit::new(from, to);
        history::each_agent_on_each_dn(&self.derived, &self.packs, |states| {
            audit.add(&ivrstate_projection::intervals(states, from, to));
        })?;
        Ok(audit.finish())
    }

    /// The audit per agent per wall-clock interval of `step` in `tz` (see
    /// [`ivrstate_projection::interval_report`]). Without `from`, from the first agent state;
    /// without `to`, up to the newest event time folded. The intervals, and the rows.
    pub fn audit_intervals(
        &self,
        from: Option<Micros>,
        to: Option<Micros>,
        step: Step,
        tz: &jiff::tz::TimeZone,
    ) -> Result<(Vec<Bucket>, Vec<IntervalRow>)> {
        let Some(to) = to.or(self.state.last_time()) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let intervals = self.history_all(from, Some(to))?;
        let Some(from) = from.or_else(|| intervals.iter().map(|i| i.start).min()) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let buckets = ivrstate_projection::buckets(from, to, step, tz);
        let rows = ivrstate_projection::interval_report(&intervals, from, to, &buckets);
        Ok((buckets, rows))
    }

    /// The login sessions overlapping `[from, to]` (without `to`: up to the newest event time
    /// folded), with their real login time even when it is before `from`.
    pub fn sessions(&self, from: Option<Micros>, to: Option<Micros>) -> Result<Vec<LoginSession>> {
        let Some(to) = to.or(self.state.last_time()) else {
            return Ok(Vec::new());
        };
        let intervals = self.history_all(None, Some(to))?;
        Ok(ivrstate_projection::sessions(&intervals, from, to))
    }

    /// Every agent's intervals in `[from, to]` (one pass over the per-agent history).
    pub fn history_all(&self, from: Option<Micros>, to: Option<Micros>) -> Result<Vec<Interval>> {
        let mut intervals = Vec::new();
        history::each_agent_on_each_dn(&self.derived, &self.packs, |states| {
            intervals.extend(ivrstate_projection::intervals(states, from, to));
        })?;
        Ok(intervals)
    }

    /// A past window as IVR clients saw it: the state at `from`, and the window's records in
    /// event-time order. Each entity's events are in order in the log (its own source), so
    /// folding the records before `from` in log order gives exactly the state at `from`, and
    /// folding the window's records sorted by (time, seq) reproduces the pushes as they happened.
    pub fn replay_window(&self, from: Option<Micros>, to: Option<Micros>) -> Result<ReplayWindow> {
        let mut start = State::default();
        let mut applied = Applied::state_only();
        let mut records: Vec<Record> = Vec::new();
        for record in self.log().read(1, self.log().last_seq()) {
            let record = record?;
            let t = record.envelope.time;
            if from.is_some_and(|f| t < f) {
                applied.clear();
                start.apply(&record, &mut applied);
            } else if to.is_none_or(|to| t <= to) {
                records.push(record);
            }
        }
        records.sort_by_key(|r| (r.envelope.time, r.seq));
        Ok(ReplayWindow { start, records })
    }

    /// Records the difference between `config` and the stored configuration; returns the
    /// events appended (none when nothing changed).
    pub fn apply_config(&mut self, config: &Config, now: Micros) -> Result<Vec<ConfigEvent>> {
        self.apply_config_from(config, now, "configuration")
    }

    /// [`Engine::apply_config`], recording `source` (the command) as where the changes came from.
    pub fn apply_config_from(
        &mut self,
        config: &Config,
        now: Micros,
        source: &str,
    ) -> Result<Vec<ConfigEvent>> {
        let events = config::diff(self.state.config(), config);
        if !events.is_empty() {
            let envelopes: Vec<Envelope> = events
                .iter()
                .map(|e| Envelope {
                    time: now,
                    recorded: now,
                    event: Event::Config(e.clone()),
                })
                .collect();
            self.append_from(
                &envelopes,
                &[SourceRun::new(envelopes.len(), source)],
                |_, _| {},
            )?;
        }
        Ok(events)
    }

    /// The configuration as the log says it is now.
    pub fn stored_config(&self) -> &Config {
        self.state.config()
    }

    /// Checks that the derived data equals what folding the log from scratch gives, up to the
    /// seq it says it reflects. Returns the faults found (empty: all good); damaged derived
    /// data is a fault, not an error, so this works on an engine from
    /// [`Engine::open_without_derived`] whatever the derived data holds. Memory stays constant:
    /// the two sides are compared as order-independent digests of their entries plus the state.
    pub fn verify_derived(&self, mut progress: impl FnMut(Seq)) -> Result<Vec<String>> {
        let rebuild = "(run `ivrstate rebuild`)";
        let mut faults = Vec::new();
        let log_last = self.log().last_seq();
        let last = match self.stored_derived_seq() {
            Ok(seq) if seq <= log_last => seq,
            Ok(seq) => {
                faults.push(format!(
                    "derived data says it reflects seq {seq}, the log ends at {log_last} {rebuild}"
                ));
                log_last
            }
            Err(e) => {
                faults.push(e.to_string());
                log_last
            }
        };
        let mut state = State::default();
        let mut applied = Applied::without_changes();
        let mut entities = BTreeSet::new();
        let mut expected = Digest::default();
        let mut deriver = Deriver::default();
        let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        // The state the last catch-up left must be the log's state at its seq.
        let stored_state = match self.derived.get(STATE_KEY)? {
            Some(bytes) => match State::from_bytes(&bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    faults.push(format!(
                        "the stored state is damaged: {e} (run `ivrstate rebuild`)"
                    ));
                    None
                }
            },
            None => None,
        };
        let stored_seq = stored_state.as_ref().map(State::last_seq);
        let mut state_matches = stored_seq.is_none_or(|s| s == 0);
        for_each_record(self.log(), 1, last, |record| {
            applied.clear();
            state.apply(record, &mut applied);
            if Some(record.seq) == stored_seq {
                state_matches = stored_state.as_ref() == Some(&state);
            }
            deriver.record(
                &state,
                &mut entities,
                &applied.touched,
                record,
                None,
                &mut batch,
            )?;
            if record.seq % SNAPSHOT_EVERY == 0 {
                batch.push((snapshot_key(record.seq), state.to_bytes()));
                progress(record.seq);
            }
            for (k, v) in batch.drain(..) {
                expected.add(&k, &v);
            }
            Ok(())
        })?;
        deriver.commit(&mut batch);
        for (k, v) in batch.drain(..) {
            expected.add(&k, &v);
        }
        let mut stored = Digest::default();
        for entry in self.derived.iter() {
            let (k, v) = entry?;
            if k == DERIVED_SEQ_KEY || k == STATE_KEY || k == COMMITTING_KEY {
                continue;
            }
            if history::is_chunk_key(&k) {
                match self.packs.resolve(&v) {
                    Ok(chunk) => stored.add(&k, &chunk),
                    Err(e) => faults.push(e.to_string()),
                }
            } else {
                stored.add(&k, &v);
            }
        }
        if stored != expected {
            faults.push(format!(
                "derived history differs from the log: stored {} entries, rebuilt {} (run `ivrstate rebuild`)",
                stored.count, expected.count
            ));
        }
        match self.state_at_seq(last) {
            Ok(stored) if stored == state => {}
            Ok(_) => faults.push(format!(
                "state at seq {last} differs from the state rebuilt from the log {rebuild}"
            )),
            Err(e) => faults.push(format!("state at seq {last}: {e}")),
        }
        if !state_matches {
            faults.push(format!(
                "the stored state at seq {} differs from the log (run `ivrstate rebuild`)",
                stored_seq.unwrap_or(0)
            ));
        }
        Ok(faults)
    }
}

/// Where a commit's derived entries go as they are made: chunks into the commit's pack (or
/// inline, for a small commit), pointers and everything else into sled, [`SLED_BATCH`] entries
/// at a time. Those batches are not the commit: the commit is the last batch, which moves
/// `derived_seq` and removes [`COMMITTING_KEY`] (written before the first), after the pack is
/// durable. sled recovers a prefix of its writes, so after a crash either the commit is whole,
/// or the marker is there and open derives everything again.
struct Staged {
    tree: DerivedTree,
    pending: usize,
    batch: DerivedBatch,
    pack: Option<packs::PackWriter>,
    /// The first error writing the pack (`Extend` cannot return it).
    error: Option<EngineError>,
}

impl Staged {
    fn check(&mut self) -> Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.batch.insert(key, value);
        self.pending += 1;
        if self.pending >= SLED_BATCH {
            self.pending = 0;
            let mut batch = std::mem::take(&mut self.batch);
            // The marker goes with the first batch that is not the commit.
            batch.insert(COMMITTING_KEY, b"");
            if let Err(e) = self.tree.apply_batch(batch) {
                self.error.get_or_insert(e.into());
            }
        }
    }
}

impl Extend<(Vec<u8>, Vec<u8>)> for Staged {
    fn extend<I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>>(&mut self, entries: I) {
        for (key, value) in entries {
            if !history::is_chunk_key(&key) {
                self.insert(&key, &value);
                continue;
            }
            match &mut self.pack {
                Some(pack) => match pack.add(&value) {
                    Ok(pointer) => self.insert(&key, &pointer),
                    Err(e) => {
                        self.error.get_or_insert(e);
                    }
                },
                None => self.insert(&key, &Packs::inline(&value)),
            }
        }
    }
}

/// Calls `f` with the records `from..=to` in order; a long range is decoded on other threads
/// while the caller folds (and handed over by reference, block by block).
fn for_each_record(
    log: &EventLog,
    from: Seq,
    to: Seq,
    mut f: impl FnMut(&Record) -> Result<()>,
) -> Result<()> {
    // Starting the decoder threads costs more than decoding a few blocks in place.
    const READ_AHEAD_FROM: Seq = 8_192;
    if to.saturating_sub(from) >= READ_AHEAD_FROM {
        log.read(from, to).read_ahead(4).visit(f)
    } else {
        log.read(from, to).try_for_each(|record| f(&record?))
    }
}

/// The `status` view of any state (`at`: the moment it is for; default its newest event time).
pub fn status_of(state: &State, at: Option<Micros>) -> StatusView {
    views::from_state(state, at)
}

/// An interval with where the record that opened it came from, next to it (`history --json`
/// and `GET /api/v1/history`).
#[derive(Serialize)]
pub struct Sourced<'a> {
    #[serde(flatten)]
    pub interval: &'a Interval,
    pub source: std::borrow::Cow<'a, str>,
}

/// The `status` view of only the entities a record touched, in the state right after it: one
/// state change as `GET /api/v1/events` sends it (same shape as `status --json`, so a reader
/// merges it into the status it loaded). A removed entity is left out.
pub fn changed_view(state: &State, seq: Seq, at: Micros, touched: &[EntityKey]) -> StatusView {
    let (mut servers, mut ports, mut agents) = (Vec::new(), Vec::new(), Vec::new());
    for entity in touched {
        match entity {
            EntityKey::Server(name) => {
                if let Some(s) = state.server(name.as_str()) {
                    servers.push(views::server(name, s));
                }
            }
            EntityKey::Port(ivr, port) => {
                if let Some(p) = state.port(ivr.as_str(), port.as_str()) {
                    let mut view = views::port(ivr, port, p);
                    view.agent_status = state.dn_status(p.tserver.as_str(), p.dn.as_str());
                    ports.push(view);
                }
            }
            EntityKey::Agent(ts, dn) => {
                if let Some(a) = state.agent_snapshot(ts.as_str(), dn.as_str()) {
                    agents.push(views::agent(&a));
                }
            }
        }
    }
    StatusView {
        seq,
        at: Some(at),
        servers,
        ports,
        agents,
    }
}

/// Order-independent digest of (key, value) pairs: count and wrapping sum of per-pair hashes.
#[derive(Default, PartialEq, Eq)]
struct Digest {
    count: u64,
    sum: u64,
}

impl Digest {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        let mut h = crc32fast::Hasher::new();
        h.update(key);
        let a = h.clone().finalize();
        h.update(&[0]);
        h.update(value);
        let b = h.finalize();
        self.count += 1;
        self.sum = self.sum.wrapping_add((u64::from(a) << 32) | u64::from(b));
    }
}

fn snapshot_key(seq: Seq) -> Vec<u8> {
    let mut key = vec![b'N'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq is the last 8 bytes of every history key.
pub(crate) fn key_seq(key: &[u8]) -> Seq {
    key.len()
        .checked_sub(8)
        .and_then(|at| keys::read_seq(&key[at..]))
        .unwrap_or(0)
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail; an empty value would be caught by verify.
    bincode::serde::encode_to_vec(value, ivrstate_model::bincode_config()).unwrap_or_default()
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    bincode::serde::decode_from_slice(bytes, ivrstate_model::bincode_config())
        .map(|(v, _)| v)
        .map_err(|e| EngineError::Derived(format!("undecodable entry: {e}")))
}
