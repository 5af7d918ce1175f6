//! Helpers shared by the fuzz targets: splitting one input into chunks, and the small
//! projection state the session target runs against.

use ivrstate_model::{
    ConfigEvent, ConfigOption, ConfigValue, Dn, Envelope, Event, IvrConfig, IvrName, Micros,
    PortConfig, Record, TLibEvent, TLibKind, TServerName,
};
use ivrstate_projection::State;

/// Splits `data` into chunks whose sizes follow a small PRNG seeded by `seed`, so that one
/// input byte lets libFuzzer explore every way a stream can be cut across reads.
pub fn chunks(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    let mut x = u32::from(seed) | 0x9e37_0000;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Mostly small cuts (headers split byte by byte), sometimes whole frames.
        let n = match x % 4 {
            0 => 1,
            1 => 1 + (x >> 8) as usize % 7,
            2 => 1 + (x >> 8) as usize % 300,
            _ => rest.len(),
        }
        .min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

/// IVR_1 (ports 01 and 02 on TS_A, link up; option Timeout) and IVR_2 (port 01 on TS_B, link
/// never seen), as the fold builds them from configuration records.
pub fn small_state() -> State {
    let ivr = |name: &str, ts: &str, options: Vec<ConfigOption>| {
        Event::Config(ConfigEvent::IvrAdded(IvrConfig {
            name: IvrName::from(name),
            tservers: vec![TServerName::from(ts)],
            options,
        }))
    };
    let port = |ivr: &str, port: &str, dn: &str, ts: &str| {
        Event::Config(ConfigEvent::PortAdded(PortConfig {
            ivr: IvrName::from(ivr),
            port: port.into(),
            dn: Dn::from(dn),
            tserver: TServerName::from(ts),
        }))
    };
    let events = vec![
        Event::Config(ConfigEvent::ServerSettings {
            version: Some("8.5.000.01".into()),
        }),
        Event::Config(ConfigEvent::TServerAdded {
            name: "TS_A".into(),
            switch: Some("SW".into()),
        }),
        Event::Config(ConfigEvent::TServerAdded {
            name: "TS_B".into(),
            switch: None,
        }),
        ivr(
            "IVR_1",
            "TS_A",
            vec![ConfigOption {
                name: "Timeout".into(),
                value: ConfigValue::Int(30),
            }],
        ),
        ivr("IVR_2", "TS_B", vec![]),
        port("IVR_1", "01", "7001", "TS_A"),
        port("IVR_1", "02", "7002", "TS_A"),
        port("IVR_2", "01", "8001", "TS_B"),
        Event::TLib(TLibEvent {
            tserver: "TS_A".into(),
            source_seq: None,
            kind: TLibKind::LinkConnected,
        }),
    ];
    let mut st = State::new();
    for (i, event) in events.into_iter().enumerate() {
        st.apply_record(&Record {
            seq: i as u64 + 1,
            envelope: Envelope {
                time: Micros::from_secs(1_700_000_000 + i as i64),
                recorded: Micros::from_secs(1_700_000_000),
                event,
            },
        });
    }
    st
}
