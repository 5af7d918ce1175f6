//! A deterministic, realistic T-Server log for demos, load tests and tests (`ivrstate simulate`).
//!
//! Several hundred agents log in and out, go Ready and NotReady with reasons (in
//! `AttributeReasons` or, as a switch sends them, `ReasonCode` in `AttributeExtensions`), do
//! after-call work and walk away; the T-Server's link drops now and then; a few printouts are
//! printed twice (same sequence number: the store must keep one); call events, request
//! printouts and Int/Trc records are interleaved; the run crosses midnight. Everything comes from
//! one seeded splitmix64 generator and no clock, so the same [`SimConfig`] gives the same bytes.
//!
//! `events` counts the state-carrying printouts written (duplicates included): parsing the output
//! yields exactly that many `Parsed::Event`s and nothing malformed.

use ivrstate_model::{Micros, WorkMode};
use std::fmt::Write as _;
use std::io::{self, Write};

const DAY_US: i64 = 86_400_000_000;
const VERSION: &str = "8.1.101.33";
const NOT_READY_REASONS: [&str; 5] = ["Break", "Lunch", "Meeting", "Training", "Coaching"];

/// What to simulate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Agents: DNs 7001.., agent ids 1001...
    pub agents: u32,
    /// State-carrying printouts to write (duplicates included).
    pub events: u64,
    pub seed: u64,
    /// The `Application name:` of the log header.
    pub tserver: String,
    /// The time of the log header; events follow it and run past the next midnight.
    pub start: Micros,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            agents: 300,
            events: 10_000,
            seed: 1,
            tserver: "TS_SIP".into(),
            // 2015-08-17T22:30:00Z: the protocol document's day, 90 minutes before midnight.
            start: Micros::from_secs(1_439_850_600),
        }
    }
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimSummary {
    /// State-carrying printouts, duplicates included (= `SimConfig::events`).
    pub events: u64,
    /// Of those, exact re-prints of the printout before (same sequence number).
    pub duplicates: u64,
    /// Printouts that carry no state (call events, requests): the parser skips them.
    pub skipped: u64,
    pub logins: u64,
    pub link_drops: u64,
    pub bytes: u64,
    /// Event times of the first and last state-carrying printout.
    pub first_time: Option<Micros>,
    pub last_time: Option<Micros>,
}

/// splitmix64: tiny, fast, and good enough for a simulation; no dependency.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `per_mille`/1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AgentState {
    Out,
    /// Logged in; the Ready/NotReady that follows a login is still to come.
    LoggedIn,
    Ready,
    NotReady,
}

/// One state-carrying printout to write.
#[derive(Clone, Debug)]
enum Ev {
    Agent {
        name: &'static str,
        agent: u32,
        work_mode: Option<WorkMode>,
        reason: Option<Reason>,
    },
    AddressInfo {
        agent: u32,
        status: i64,
    },
    Link {
        up: bool,
    },
}

#[derive(Clone, Copy, Debug)]
enum Reason {
    /// `AttributeReasons` `ReasonCode` (a desktop's reason).
    Reasons(&'static str),
    /// `AttributeExtensions` `ReasonCode` (a switch's reason).
    Extensions(&'static str),
}

/// Writes a simulated T-Server log; see the module documentation.
pub struct Simulator {
    cfg: SimConfig,
    rng: Rng,
    agents: Vec<AgentState>,
    /// An agent that just logged in and whose Ready/NotReady comes next.
    pending: Option<u32>,
    link_up: bool,
    seq: u64,
    buf: String,
    /// The last state printout, for exact duplicates.
    last: String,
    summary: SimSummary,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let n = cfg.agents.max(1) as usize;
        Simulator {
            rng: Rng(cfg.seed),
            agents: vec![AgentState::Out; n],
            pending: None,
            link_up: true,
            // A T-Server that has run for a while: sequence numbers well above zero.
            seq: 0x10c_0000 + (cfg.seed % 0x1000) * 0x100,
            buf: String::with_capacity(1 << 17),
            last: String::new(),
            summary: SimSummary::default(),
            cfg,
        }
    }

    /// Writes the whole log to `w`.
    pub fn write<W: Write + ?Sized>(mut self, w: &mut W) -> io::Result<SimSummary> {
        let start = self.cfg.start;
        self.header(start);
        let n = self.cfg.events;
        // The run lasts twice the time to the next midnight plus an hour, so the events (spread
        // evenly, with jitter below one step) always cross it.
        let to_midnight = DAY_US - start.0.rem_euclid(DAY_US);
        let span = 2 * to_midnight + 3_600_000_000;
        let step = (span / (n as i64 + 1)).max(1);
        for k in 0..n {
            let jitter = self.rng.below(((step / 2).max(1)) as u64) as i64;
            let t = Micros(start.0 + step * (k as i64 + 1) + jitter);
            self.slot(t, k);
            if self.buf.len() >= 1 << 16 {
                self.flush(w)?;
            }
        }
        self.flush(w)?;
        w.flush()?;
        Ok(self.summary)
    }

    fn flush<W: Write + ?Sized>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(self.buf.as_bytes())?;
        self.summary.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn header(&mut self, t: Micros) {
        let iso = iso(t);
        let ts = self.cfg.tserver.clone();
        let _ = write!(
            self.buf,
            "{iso} Std 05060 Log file opened ({ts}.log)\n\
             Application name:       {ts}\n\
             Application type:       TServer (SIP Server)\n\
             Application version:    {VERSION}\n\
             Host name:              sim-host\n\
             Local time:             {iso}\n\
             \n"
        );
    }

    /// One state-carrying printout at `t`, with the noise around it.
    fn slot(&mut self, t: Micros, k: u64) {
        if k > 0 && self.rng.chance(3) {
            // An exact duplicate, as when a log is fed twice in part or a printout is repeated.
            self.summary.duplicates += 1;
            self.summary.events += 1;
            let last = std::mem::take(&mut self.last);
            self.buf.push_str(&last);
            self.last = last;
            return;
        }
        if self.rng.chance(300) {
            self.noise(t);
        }
        let ev = self.choose(k);
        self.seq += 1;
        let start = self.buf.len();
        self.printout(t, &ev);
        self.last.clear();
        self.last
            .push_str(self.buf.get(start..).unwrap_or_default());
        self.summary.events += 1;
        self.summary.first_time.get_or_insert(t);
        self.summary.last_time = Some(t);
        let name = match &ev {
            Ev::Agent { name, .. } => name,
            Ev::AddressInfo { .. } => "EventAddressInfo",
            Ev::Link { up: true } => "EventLinkConnected",
            Ev::Link { up: false } => "EventLinkDisconnected",
        };
        let _ = writeln!(
            self.buf,
            "{} Int 04545 Interaction message \"{name}\" sent to 24 (\"ICON_localdb\")",
            iso(t)
        );
    }

    /// Picks the next state-carrying event and moves the simulated world on.
    fn choose(&mut self, k: u64) -> Ev {
        if !self.link_up {
            self.link_up = true;
            return Ev::Link { up: true };
        }
        // At least one link drop in any run long enough to show it, more in long runs.
        let n = self.cfg.events;
        if (n >= 20 && k == n / 2) || self.rng.chance(1) && k + 1 < n {
            self.link_up = false;
            self.summary.link_drops += 1;
            return Ev::Link { up: false };
        }
        if let Some(a) = self.pending.take() {
            return self.after_login(a);
        }
        let a = self.rng.below(self.agents.len() as u64) as u32;
        if self.rng.chance(10) {
            let status = match self.agents[a as usize] {
                AgentState::Out => 0,
                AgentState::LoggedIn => 1,
                AgentState::Ready => 2,
                AgentState::NotReady => 3 + self.rng.below(3) as i64,
            };
            return Ev::AddressInfo { agent: a, status };
        }
        let roll = self.rng.below(100);
        match self.agents[a as usize] {
            AgentState::Out => {
                self.agents[a as usize] = AgentState::LoggedIn;
                self.pending = Some(a);
                self.summary.logins += 1;
                Ev::Agent {
                    name: "EventAgentLogin",
                    agent: a,
                    work_mode: Some(WorkMode::Unknown),
                    reason: None,
                }
            }
            AgentState::LoggedIn => self.after_login(a),
            AgentState::Ready => {
                if roll < 50 {
                    self.agents[a as usize] = AgentState::NotReady;
                    // After a call: the dedicated event, or NotReady in AfterCallWork mode.
                    let name = if roll < 30 {
                        "EventAgentAfterCallWork"
                    } else {
                        "EventAgentNotReady"
                    };
                    Ev::Agent {
                        name,
                        agent: a,
                        work_mode: Some(WorkMode::AfterCallWork),
                        reason: None,
                    }
                } else if roll < 80 {
                    self.not_ready(a)
                } else if roll < 88 {
                    self.agents[a as usize] = AgentState::NotReady;
                    Ev::Agent {
                        name: "EventAgentNotReady",
                        agent: a,
                        work_mode: Some(WorkMode::WalkAway),
                        reason: None,
                    }
                } else {
                    self.agents[a as usize] = AgentState::Out;
                    Ev::Agent {
                        name: "EventAgentLogout",
                        agent: a,
                        work_mode: None,
                        reason: None,
                    }
                }
            }
            AgentState::NotReady => {
                if roll < 70 {
                    self.ready(a)
                } else if roll < 85 {
                    self.not_ready(a)
                } else {
                    self.agents[a as usize] = AgentState::Out;
                    Ev::Agent {
                        name: "EventAgentLogout",
                        agent: a,
                        work_mode: None,
                        reason: None,
                    }
                }
            }
        }
    }

    fn after_login(&mut self, a: u32) -> Ev {
        if self.rng.chance(600) {
            self.ready(a)
        } else {
            self.not_ready(a)
        }
    }

    fn ready(&mut self, a: u32) -> Ev {
        self.agents[a as usize] = AgentState::Ready;
        let mode = if self.rng.chance(500) {
            WorkMode::ManualIn
        } else {
            WorkMode::AutoIn
        };
        Ev::Agent {
            name: "EventAgentReady",
            agent: a,
            work_mode: Some(mode),
            reason: None,
        }
    }

    fn not_ready(&mut self, a: u32) -> Ev {
        self.agents[a as usize] = AgentState::NotReady;
        let r = NOT_READY_REASONS[self.rng.below(NOT_READY_REASONS.len() as u64) as usize];
        let reason = if self.rng.chance(500) {
            Reason::Reasons(r)
        } else {
            Reason::Extensions(r)
        };
        Ev::Agent {
            name: "EventAgentNotReady",
            agent: a,
            work_mode: Some(WorkMode::AuxWork),
            reason: Some(reason),
        }
    }

    /// Printouts and records that carry no state: a call on some DN, or a request.
    fn noise(&mut self, t: Micros) {
        let dn = 7001 + self.rng.below(self.agents.len() as u64);
        let iso = iso(t);
        let at = at_time(t);
        if self.rng.chance(500) {
            let _ = writeln!(
                self.buf,
                "{iso} Trc 04541 Message RequestAgentReady received from 24 (ICON)"
            );
            let _ = write!(
                self.buf,
                "@{at} [0] {VERSION} handle_request: message RequestAgentReady\n\
                 \tAttributeThisDN\t'{dn}'\n\
                 \tAttributeReferenceID\t{}\n\
                 \tAttributeAgentWorkMode\t2 (AutoIn)\n",
                self.rng.below(10_000)
            );
        } else {
            let name = [
                "EventDialing",
                "EventRinging",
                "EventEstablished",
                "EventReleased",
            ][self.rng.below(4) as usize];
            self.seq += 1;
            let (secs, us) = t.split();
            let _ = write!(
                self.buf,
                "@{at} [0] {VERSION} distribute_event: message {name}\n\
                 \tAttributeEventSequenceNumber\t{:016x}\n\
                 \tAttributeTimeinuSecs\t{us}\n\
                 \tAttributeTimeinSecs\t{secs} ({})\n\
                 \tAttributeThisDN\t'{dn}'\n\
                 \tAttributeOtherDN\t'+1555{:06}'\n\
                 \tAttributeConnID\t{:016x}\n\
                 \tAttributeUserData\t[31] 00 01 00 00..\n\
                 \t\t'Customer'\t'C{}'\n",
                self.seq,
                at.get(..8).unwrap_or(&at),
                self.rng.below(1_000_000),
                self.rng.next() >> 8,
                self.rng.below(100_000),
            );
            let _ = writeln!(
                self.buf,
                "{iso} Int 04545 Interaction message \"{name}\" sent to 24 (\"ICON_localdb\")"
            );
        }
        self.summary.skipped += 1;
    }

    fn printout(&mut self, t: Micros, ev: &Ev) {
        let (secs, us) = t.split();
        let at = at_time(t);
        let (verb, name) = match ev {
            Ev::Agent { name, .. } => (
                if self.rng.chance(100) {
                    "send_to_client"
                } else {
                    "distribute_event"
                },
                *name,
            ),
            Ev::AddressInfo { .. } => ("send_to_client", "EventAddressInfo"),
            Ev::Link { up: true } => ("distribute_event", "EventLinkConnected"),
            Ev::Link { up: false } => ("distribute_event", "EventLinkDisconnected"),
        };
        let _ = write!(
            self.buf,
            "@{at} [0] {VERSION} {verb}: message {name}\n\
             \tAttributeEventSequenceNumber\t{:016x}\n\
             \tAttributeTimeinuSecs\t{us}\n\
             \tAttributeTimeinSecs\t{secs} ({})\n",
            self.seq,
            at.get(..8).unwrap_or(&at)
        );
        match ev {
            Ev::Agent {
                name,
                agent,
                work_mode,
                reason,
            } => {
                let (dn, id) = (7001 + agent, 1001 + agent);
                let _ = write!(
                    self.buf,
                    "\tAttributeThisDN\t'{dn}'\n\tAttributeAgentID\t'{id}'\n"
                );
                if matches!(*name, "EventAgentLogin" | "EventAgentLogout") {
                    let _ = writeln!(self.buf, "\tAttributeThisQueue\t'{}'", 8001 + agent % 5);
                }
                if let Some(m) = work_mode {
                    let _ = writeln!(
                        self.buf,
                        "\tAttributeAgentWorkMode\t{} ({})",
                        m.code(),
                        m.name()
                    );
                }
                match reason {
                    Some(Reason::Reasons(r)) => {
                        let _ = write!(
                            self.buf,
                            "\tAttributeReasons\t[19] 00 01 00 00..\n\t\t'ReasonCode'\t'{r}'\n"
                        );
                    }
                    Some(Reason::Extensions(r)) => {
                        let _ = write!(
                            self.buf,
                            "\tAttributeExtensions\t[38] 00 02 01 00..\n\t\t'ReasonCode'\t'{r}'\n\t\t'ReasonCodeType'\t1\n"
                        );
                    }
                    None => {}
                }
            }
            Ev::AddressInfo { agent, status } => {
                let (dn, id) = (7001 + agent, 1001 + agent);
                let _ = write!(
                    self.buf,
                    "\tAttributeThisDN\t'{dn}'\n\
                     \tAttributeAgentID\t'{id}'\n\
                     \tAttributeAddressInfoType\t2\n\
                     \tAttributeExtensions\t[40] 00 02 01 00..\n\
                     \t\t'AgentStatus'\t{status}\n\
                     \t\t'AgentSessionID'\t'S{id}'\n"
                );
            }
            Ev::Link { .. } => {}
        }
    }
}

/// Writes a simulated T-Server log; see [`Simulator`].
pub fn simulate<W: Write + ?Sized>(cfg: SimConfig, w: &mut W) -> io::Result<SimSummary> {
    Simulator::new(cfg).write(w)
}

/// `2015-08-17T23:16:17.458` (the Int/Trc record stamp: milliseconds, no zone).
fn iso(t: Micros) -> String {
    let c = t.to_civil();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.micros / 1000
    )
}

/// `23:16:17.4586` (the `@` stamp: ten-thousandths of a second).
fn at_time(t: Micros) -> String {
    let c = t.to_civil();
    format!(
        "{:02}:{:02}:{:02}.{:04}",
        c.hour,
        c.minute,
        c.second,
        c.micros / 100
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivrstate_ingest::parse::{ParseError, Parsed, TlogReader};
    use ivrstate_model::{Event, TLibKind};
    use proptest::prelude::*;

    fn run(cfg: SimConfig) -> (Vec<u8>, SimSummary) {
        let mut out = Vec::new();
        let summary = simulate(cfg, &mut out).unwrap();
        (out, summary)
    }

    /// What parsing the simulated log gave, counted.
    #[derive(Default)]
    struct Counts {
        events: u64,
        skipped: u64,
        malformed: u64,
        errors: Vec<ParseError>,
    }

    fn parse(bytes: &[u8]) -> (Vec<Parsed>, Counts) {
        let items: Vec<Parsed> = TlogReader::new(bytes, "sim.log", None, Micros(0)).collect();
        let mut counts = Counts::default();
        for item in &items {
            match item {
                Parsed::Event { .. } => counts.events += 1,
                Parsed::Skipped { .. } => counts.skipped += 1,
                Parsed::Malformed(e) => {
                    counts.malformed += 1;
                    counts.errors.push(e.clone());
                }
            }
        }
        (items, counts)
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let cfg = SimConfig {
            events: 2000,
            ..SimConfig::default()
        };
        let (a, sa) = run(cfg.clone());
        let (b, _) = run(cfg.clone());
        assert_eq!(a, b);
        assert_eq!(sa.bytes, a.len() as u64);
        let (c, _) = run(SimConfig { seed: 2, ..cfg });
        assert_ne!(a, c);
    }

    #[test]
    fn parses_back_completely_and_has_every_feature() {
        let cfg = SimConfig {
            agents: 300,
            events: 20_000,
            ..SimConfig::default()
        };
        let (bytes, summary) = run(cfg.clone());
        let (items, stats) = parse(&bytes);
        assert_eq!(stats.malformed, 0, "{:?}", stats.errors);
        assert_eq!(stats.events, cfg.events);
        assert_eq!(summary.events, cfg.events);
        assert_eq!(stats.skipped, summary.skipped);
        assert!(summary.duplicates > 0 && summary.link_drops > 0 && summary.skipped > 0);

        let mut names = std::collections::BTreeSet::new();
        let (mut with_reasons, mut with_ext_reason, mut walk_away, mut dups) = (0, 0, 0, 0);
        let mut dns = std::collections::BTreeSet::new();
        let mut last: Option<(u64, Micros)> = None;
        let mut days = std::collections::BTreeSet::new();
        for item in &items {
            let Parsed::Event { envelope: env, .. } = item else {
                continue;
            };
            let Event::TLib(t) = &env.event else { panic!() };
            assert_eq!(t.tserver.as_str(), "TS_SIP");
            names.insert(t.kind.event_name());
            let seq = t.source_seq.unwrap();
            if let Some((s, time)) = last {
                assert!(seq >= s && env.time >= time, "monotonic");
                dups += u64::from(seq == s);
            }
            last = Some((seq, env.time));
            days.insert(env.time.start_of_day());
            if let TLibKind::Agent(a) = &t.kind {
                dns.insert(a.dn.clone());
                with_reasons += usize::from(a.reasons.get("ReasonCode").is_some());
                with_ext_reason += usize::from(a.extensions.get("ReasonCode").is_some());
                walk_away += usize::from(a.work_mode == Some(WorkMode::WalkAway));
            }
        }
        assert_eq!(names.len(), 8, "every state-carrying event kind: {names:?}");
        assert!(with_reasons > 0 && with_ext_reason > 0 && walk_away > 0);
        assert!(dns.len() > 250, "several hundred agents: {}", dns.len());
        assert_eq!(dups, summary.duplicates);
        assert_eq!(days.len(), 2, "crosses midnight");
    }

    #[test]
    fn small_runs_still_cross_midnight() {
        for events in [1, 2, 5] {
            let (bytes, s) = run(SimConfig {
                events,
                ..SimConfig::default()
            });
            let (_, stats) = parse(&bytes);
            assert_eq!(stats.events, events);
            let last = s.last_time.unwrap();
            assert!(last.start_of_day() > SimConfig::default().start.start_of_day());
        }
        let (bytes, s) = run(SimConfig {
            events: 0,
            ..SimConfig::default()
        });
        assert_eq!(s.events, 0);
        assert!(parse(&bytes).0.is_empty());
    }

    /// Rough parse throughput on the simulator's output (release build):
    /// `cargo test -p ivrstate-simulate --release -- --ignored --nocapture parse_throughput`.
    #[test]
    #[ignore]
    fn parse_throughput() {
        let (bytes, s) = run(SimConfig {
            agents: 500,
            events: 400_000,
            ..SimConfig::default()
        });
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            let n = TlogReader::new(&bytes[..], "sim.log", None, Micros(0))
                .filter(|p| matches!(p, Parsed::Event { .. }))
                .count();
            best = best.min(t0.elapsed().as_secs_f64());
            assert_eq!(n as u64, s.events);
        }
        println!(
            "parsed {} MB, {} events in {:.3} s: {:.0} MB/s, {:.0} events/s",
            bytes.len() / 1_000_000,
            s.events,
            best,
            bytes.len() as f64 / 1e6 / best,
            s.events as f64 / best
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn simulate_then_parse_yields_exactly_the_events(
            agents in 1u32..50,
            events in 0u64..1500,
            seed in any::<u64>(),
            start in 0i64..4_000_000_000,
        ) {
            let cfg = SimConfig { agents, events, seed, tserver: "TS".into(), start: Micros::from_secs(start) };
            let (bytes, summary) = run(cfg);
            let (_, stats) = parse(&bytes);
            prop_assert_eq!(stats.malformed, 0, "{:?}", stats.errors);
            prop_assert_eq!(stats.events, events);
            prop_assert_eq!(stats.skipped, summary.skipped);
        }
    }
}
