//! The benchmark's input: a simulated T-Server log on disk, parsed once into bincode bytes.
//!
//! The events are kept encoded (one contiguous buffer) rather than as `Envelope`s: a million
//! envelopes with their strings would cost several hundred MB and make the process's peak
//! memory a figure of the benchmark instead of the store. Each scenario decodes a batch just
//! before it is measured.

use anyhow::{bail, Context, Result};
use ivrstate_ingest::parse::{Parsed, TlogReader};
use ivrstate_model::{
    ConfigEvent, Dn, Envelope, Event, IvrConfig, IvrName, Micros, PortConfig, PortNum, TServerName,
};
use ivrstate_simulate::{simulate, SimConfig};
use ivrstate_store::codec;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const TSERVER: &str = "TS_SIP";
pub const IVR: &str = "IVR_1";
pub const AGENTS: u32 = 300;
pub const SEED: u64 = 1;

/// Events as per-event bincode, in log order.
pub struct Encoded {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Encoded {
    fn new() -> Self {
        Encoded {
            buf: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Appends `env`, unless it is an exact re-print of the event before (the simulator's
    /// duplicates): every system then stores the same events and must rebuild the same State.
    /// Returns whether it was kept.
    fn push(&mut self, env: &Envelope) -> Result<bool> {
        let bytes = codec::encode_envelope(env)?;
        if !self.is_empty() && self.get(self.len() - 1) == bytes.as_slice() {
            return Ok(false);
        }
        self.buf.extend_from_slice(&bytes);
        self.ends.push(self.buf.len());
        Ok(true)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bincode bytes of event `i` (0-based).
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Decodes events `range` (what a scenario hands to the system under test).
    pub fn decode(&self, range: std::ops::Range<usize>, out: &mut Vec<Envelope>) -> Result<()> {
        out.clear();
        for i in range {
            out.push(codec::decode_envelope(self.get(i))?);
        }
        Ok(())
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }
}

pub struct Data {
    /// The simulated T-Server log.
    pub tlog: PathBuf,
    pub tlog_bytes: u64,
    /// Exact re-prints the simulator wrote, left out of `events`.
    pub duplicates: u64,
    /// Seconds the first parse took (also a `tlog_parse` sample).
    pub first_parse_secs: f64,
    /// The configuration events, then every parsed event.
    pub events: Encoded,
    pub first_time: Micros,
    pub last_time: Micros,
    /// The ports configured on [`IVR`].
    pub ports: Vec<PortNum>,
}

/// The configuration that makes the state answer GLI clients: one T-Server, one IVR, one port
/// per simulated agent DN (7001..).
fn config_events(start: Micros) -> (Vec<Envelope>, Vec<PortNum>) {
    let env = |event| Envelope {
        time: start,
        recorded: start,
        event: Event::Config(event),
    };
    let mut out = vec![
        env(ConfigEvent::ServerSettings {
            version: Some("8.5.000.01".into()),
        }),
        env(ConfigEvent::TServerAdded {
            name: TServerName::from(TSERVER),
            switch: Some("SIP".into()),
        }),
        env(ConfigEvent::IvrAdded(IvrConfig {
            name: IvrName::from(IVR),
            tservers: vec![TServerName::from(TSERVER)],
            options: vec![],
        })),
    ];
    let mut ports = Vec::new();
    for i in 0..AGENTS {
        let port = PortNum::new(format!("{:03}", i + 1));
        ports.push(port.clone());
        out.push(env(ConfigEvent::PortAdded(PortConfig {
            ivr: IvrName::from(IVR),
            port,
            dn: Dn::new(format!("{}", 7001 + i)),
            tserver: TServerName::from(TSERVER),
        })));
    }
    (out, ports)
}

/// Writes the simulated log into `dir` and parses it once.
pub fn generate(dir: &Path, events: u64) -> Result<Data> {
    let cfg = SimConfig {
        agents: AGENTS,
        events,
        seed: SEED,
        tserver: TSERVER.into(),
        ..SimConfig::default()
    };
    let start = cfg.start;
    let tlog = dir.join("simulated.log");
    let file = std::fs::File::create(&tlog).with_context(|| format!("creating {tlog:?}"))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let summary = simulate(cfg, &mut w)?;
    w.flush()?;
    drop(w);

    let (config, ports) = config_events(start);
    let mut encoded = Encoded::new();
    for env in &config {
        encoded.push(env)?;
    }
    let t = Instant::now();
    let mut parsed = 0u64;
    let mut duplicates = 0u64;
    let mut first_time = None;
    let mut last_time = start;
    for item in open_tlog(&tlog)? {
        match item {
            Parsed::Event { envelope: env, .. } => {
                parsed += 1;
                first_time.get_or_insert(env.time);
                last_time = last_time.max(env.time);
                if !encoded.push(&env)? {
                    duplicates += 1;
                }
            }
            Parsed::Skipped { .. } => {}
            Parsed::Malformed(e) => bail!("the simulated log does not parse: {e}"),
        }
    }
    let first_parse_secs = t.elapsed().as_secs_f64();
    if parsed != summary.events {
        bail!(
            "parsed {parsed} events, the simulator wrote {}",
            summary.events
        );
    }
    Ok(Data {
        tlog_bytes: std::fs::metadata(&tlog)?.len(),
        tlog,
        duplicates,
        first_parse_secs,
        events: encoded,
        first_time: first_time.unwrap_or(start),
        last_time,
        ports,
    })
}

pub fn open_tlog(path: &Path) -> Result<TlogReader<BufReader<std::fs::File>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path:?}"))?;
    Ok(TlogReader::new(
        BufReader::with_capacity(1 << 16, file),
        "simulated.log",
        None,
        Micros(0),
    ))
}

/// `path` gzip'd (default level, as gzip and logrotate write) beside it; returns its path.
pub fn gzip_copy(path: &Path) -> Result<std::path::PathBuf> {
    let out = path.with_extension("log.gz");
    let mut input = std::fs::File::open(path).with_context(|| format!("opening {path:?}"))?;
    let file = std::fs::File::create(&out).with_context(|| format!("creating {out:?}"))?;
    let mut gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(file),
        flate2::Compression::default(),
    );
    std::io::copy(&mut input, &mut gz)?;
    gz.finish()?;
    Ok(out)
}

/// A gzip'd log read as `ingest` reads it: told by content, decompressed on another thread.
pub fn open_tlog_gz(path: &Path) -> Result<TlogReader<BufReader<Box<dyn std::io::Read + Send>>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path:?}"))?;
    let (text, _) = ivrstate_ingest::input::open_text(file, "simulated.log.gz")?;
    Ok(TlogReader::new(
        BufReader::with_capacity(1 << 16, text),
        "simulated.log.gz",
        None,
        Micros(0),
    ))
}

/// Decompresses `path` into nothing: the cost of decompression alone; returns the bytes.
pub fn gunzip_only(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path:?}"))?;
    let mut gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file));
    Ok(std::io::copy(&mut gz, &mut std::io::sink())?)
}

/// splitmix64: deterministic choices (query times, ports) without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
