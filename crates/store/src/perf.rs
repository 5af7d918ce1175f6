//! A rough check of append rate and bytes per event (not a benchmark, not a test: run with
//! `cargo test -p ivrstate-store --release --lib perf -- --ignored --nocapture`).

use crate::*;
use ivrstate_model::*;
use std::time::Instant;

fn small_agent_event(i: u64) -> Envelope {
    let kinds = [
        AgentEventKind::Login,
        AgentEventKind::Ready,
        AgentEventKind::NotReady,
        AgentEventKind::AfterCallWork,
        AgentEventKind::Logout,
    ];
    let dn = 7000 + i % 500;
    Envelope {
        time: Micros(1_439_853_377_000_000 + i as i64 * 1_700),
        recorded: Micros(1_700_000_000_000_000 + i as i64 / 1000),
        event: Event::TLib(TLibEvent {
            tserver: TServerName::from("TS_SIP"),
            source_seq: Some(0x10c_9288 + i),
            kind: TLibKind::Agent(AgentEvent {
                kind: kinds[(i % 5) as usize],
                dn: Dn::from(dn.to_string()),
                agent_id: Some(AgentId::from((dn - 6000).to_string())),
                queue: None,
                work_mode: None,
                reasons: KvList::default(),
                extensions: KvList::default(),
            }),
        }),
    }
}

#[test]
#[ignore]
fn append_rate_and_bytes_per_event() {
    const N: u64 = 1_000_000;
    const BATCH: u64 = 1000;
    let events: Vec<Envelope> = (0..N).map(small_agent_event).collect();
    let raw: usize = events
        .iter()
        .map(|e| codec::encode_envelope(e).unwrap().len())
        .sum();
    for durability in [Durability::Full, Durability::Relaxed] {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                durability,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let io_before = written_bytes();
        let start = Instant::now();
        for chunk in events.chunks(BATCH as usize) {
            store.log().append(chunk).unwrap();
        }
        store.flush().unwrap();
        let secs = start.elapsed().as_secs_f64();
        let size = store.size_on_disk();
        let io = written_bytes() - io_before;
        let logical = store.log().verify().unwrap().bytes;
        println!(
            "  written to disk {:.1} bytes/event; block values {:.1} bytes/event",
            io as f64 / N as f64,
            logical as f64 / N as f64
        );
        let start = Instant::now();
        let again = store.log().append(&events[..100_000]).unwrap();
        let dedup_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let read = store.log().read(1, N).count();
        let read_secs = start.elapsed().as_secs_f64();
        drop(store);
        let reopened = Store::open(dir.path(), StoreOptions::default())
            .unwrap()
            .size_on_disk();
        println!(
            "{durability:?}: {:.2} M events/s appended; {:.1} bytes/event on disk ({:.1} after reopen; raw bincode {:.1}); \
             re-feeding 100k: {} duplicates at {:.2} M events/s; read {read} at {:.2} M events/s",
            N as f64 / secs / 1e6,
            size as f64 / N as f64,
            reopened as f64 / N as f64,
            raw as f64 / N as f64,
            again.duplicates,
            1e5 / dedup_secs / 1e6,
            read as f64 / read_secs / 1e6,
        );
    }
}

#[test]
#[ignore]
fn where_the_time_goes() {
    let events: Vec<Envelope> = (0..1_000_000).map(small_agent_event).collect();
    let t = Instant::now();
    let mut blocks = Vec::new();
    for c in events.chunks(1000) {
        blocks.push(codec::encode_block(c).unwrap());
    }
    println!(
        "encode_block: {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / 1e6
    );
    let t = Instant::now();
    let mut raws = Vec::new();
    for c in events.chunks(1000) {
        raws.push(bincode::serde::encode_to_vec(c, ivrstate_model::bincode_config()).unwrap());
    }
    println!(
        "bincode only: {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / 1e6
    );
    let t = Instant::now();
    for r in &raws {
        std::hint::black_box(lz4_flex::compress_prepend_size(r));
    }
    println!(
        "lz4 only: {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / 1e6
    );
    let t = Instant::now();
    for c in events.chunks(1000) {
        let mut heads: std::collections::HashMap<(&str, u64), u32> =
            std::collections::HashMap::with_capacity(1000);
        for (i, e) in c.iter().enumerate() {
            let (ts, s) = e.source_key().unwrap();
            heads.insert((ts.as_str(), s), i as u32);
        }
        std::hint::black_box(heads);
    }
    println!(
        "hashmap: {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / 1e6
    );
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(16 << 20)
        .open()
        .unwrap();
    let tree = db.open_tree("log").unwrap();
    let t = Instant::now();
    for (i, b) in blocks.iter().enumerate() {
        tree.insert(crate::log::block_key(i as u64 * 1000 + 1), b.as_slice())
            .unwrap();
    }
    println!(
        "sled insert: {:.0} ns/event",
        t.elapsed().as_nanos() as f64 / 1e6
    );
    let t = Instant::now();
    for _ in 0..200 {
        tree.insert(b"x", b"y").unwrap();
        tree.flush().unwrap();
    }
    println!(
        "sled tiny insert+flush: {:.0} us",
        t.elapsed().as_micros() as f64 / 200.0
    );
    let t = Instant::now();
    for (i, b) in blocks.iter().take(300).enumerate() {
        tree.insert(
            crate::log::block_key(2_000_000 + i as u64 * 1000),
            b.as_slice(),
        )
        .unwrap();
        tree.flush().unwrap();
    }
    println!(
        "sled block insert+flush: {:.0} us",
        t.elapsed().as_micros() as f64 / 300.0
    );
    let f = std::fs::File::create(dir.path().join("raw")).unwrap();
    let t = Instant::now();
    for b in blocks.iter().take(300) {
        use std::io::Write;
        (&f).write_all(b).unwrap();
        f.sync_data().unwrap();
    }
    println!(
        "raw write+fdatasync: {:.0} us",
        t.elapsed().as_micros() as f64 / 300.0
    );
}

fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
