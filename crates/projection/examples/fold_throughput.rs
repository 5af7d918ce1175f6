//! Rough fold throughput on synthetic agent events (run with `--release`):
//! `cargo run --release -p ivrstate-projection --example fold_throughput [EVENTS]`.
//! Prints events/s for the fold alone and for bincode decode + fold of in-memory bytes.
//! A measurement tool, not a test: nothing here asserts timings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_model::*;
use ivrstate_projection::{Applied, State};
use std::time::Instant;

const AGENTS: usize = 2000;

fn config() -> Vec<Event> {
    let mut evs = vec![
        Event::Config(ConfigEvent::TServerAdded {
            name: "TS_SIP".into(),
            switch: Some("SIP".into()),
        }),
        Event::Config(ConfigEvent::IvrAdded(IvrConfig {
            name: "IVR_1".into(),
            tservers: vec!["TS_SIP".into()],
            options: vec![],
        })),
        Event::TLib(TLibEvent {
            tserver: "TS_SIP".into(),
            source_seq: None,
            kind: TLibKind::LinkConnected,
        }),
    ];
    // Half of the DNs are shown by a port, so half of the events produce a Change.
    for i in 0..AGENTS / 2 {
        evs.push(Event::Config(ConfigEvent::PortAdded(PortConfig {
            ivr: "IVR_1".into(),
            port: PortNum::new(format!("{i:04}")),
            dn: Dn::new(format!("{}", 70000 + i)),
            tserver: "TS_SIP".into(),
        })));
    }
    evs
}

fn agent_event(i: usize) -> Event {
    let agent = i % AGENTS;
    let step = i / AGENTS;
    let (kind, mode, reason) = match step % 6 {
        0 => (AgentEventKind::Login, None, None),
        1 => (AgentEventKind::Ready, Some(WorkMode::ManualIn), None),
        2 => (
            AgentEventKind::NotReady,
            Some(WorkMode::AuxWork),
            Some("Break"),
        ),
        3 => (
            AgentEventKind::AfterCallWork,
            Some(WorkMode::AfterCallWork),
            None,
        ),
        4 => (AgentEventKind::Ready, Some(WorkMode::AutoIn), None),
        _ => (AgentEventKind::Logout, None, None),
    };
    Event::TLib(TLibEvent {
        tserver: "TS_SIP".into(),
        source_seq: Some(i as u64),
        kind: TLibKind::Agent(AgentEvent {
            kind,
            dn: Dn::new(format!("{}", 70000 + agent)),
            agent_id: Some(AgentId::new(format!("{}", 1000 + agent))),
            queue: None,
            work_mode: mode,
            reasons: KvList(
                reason
                    .map(|r| vec![("ReasonCode".into(), r.into())])
                    .unwrap_or_default(),
            ),
            extensions: KvList::default(),
        }),
    })
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let t0 = 1_439_853_377i64 * 1_000_000;
    let records: Vec<Record> = config()
        .into_iter()
        .chain((0..n).map(agent_event))
        .enumerate()
        .map(|(i, event)| Record {
            seq: i as Seq + 1,
            envelope: Envelope {
                time: Micros(t0 + i as i64 * 1000),
                recorded: Micros(t0),
                event,
            },
        })
        .collect();
    let cfg = ivrstate_model::bincode_config();
    let encoded: Vec<(Seq, Vec<u8>)> = records
        .iter()
        .map(|r| {
            (
                r.seq,
                bincode::serde::encode_to_vec(&r.envelope, cfg).expect("envelope encodes"),
            )
        })
        .collect();

    for round in 0..3 {
        let mut state = State::new();
        let mut out = Applied::new();
        let (mut changes, mut touched) = (0usize, 0usize);
        let start = Instant::now();
        for r in &records {
            out.clear();
            state.apply(r, &mut out);
            changes += out.changes.len();
            touched += out.touched.len();
        }
        let fold = start.elapsed();

        let mut state1 = State::new();
        let mut quiet = Applied::without_changes();
        let start = Instant::now();
        for r in &records {
            quiet.clear();
            state1.apply(r, &mut quiet);
        }
        let fold_quiet = start.elapsed();

        let mut state2 = State::new();
        let start = Instant::now();
        for (seq, bytes) in &encoded {
            let (envelope, _): (Envelope, usize) =
                bincode::serde::decode_from_slice(bytes, cfg).expect("decodes");
            out.clear();
            state2.apply(
                &Record {
                    seq: *seq,
                    envelope,
                },
                &mut out,
            );
        }
        let both = start.elapsed();
        assert!(state == state2 && state == state1);
        let total = records.len() as f64;
        println!(
            "round {round}: {} records ({changes} changes, {touched} touched): fold {:.2} M/s, \
             fold without changes {:.2} M/s, decode+fold {:.2} M/s",
            records.len(),
            total / fold.as_secs_f64() / 1e6,
            total / fold_quiet.as_secs_f64() / 1e6,
            total / both.as_secs_f64() / 1e6,
        );
    }
}
