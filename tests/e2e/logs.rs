//! `ivrstate ingest` on what sites keep: a directory of log segments, old ones gzip'd, written
//! in local time with the zone in their header. The real binary, real files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::{exported_events, Ivrstate};
use std::io::Write;

fn ivrstate() -> Ivrstate {
    Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"))
}

/// A segment of a SIP Server log in India (UTC+05:30), with one Ready printout at `at` (local
/// wall-clock time) and the sequence number `seq`.
fn segment(day: &str, at: &str, seq: u32) -> String {
    format!(
        "Application name: SIP_P\n\
         Application type: TServer (1)\n\
         Time zone:        -19800, Test Standard Time, Test Daylight Time\n\
         UTC time:         {day}T00:00:00.000\n\
         Local time:       {day}T05:30:00.000\n\
         \n\
         {day}T05:30:00.001 Trc 04110 Option 'time-convert' has been set to the value 'local'\n\
         13:54:59.856: SIPTR: Received [0,UDP] 467 bytes from 10.0.0.1:5060 <<<<<\n\
         INVITE sip:3001@10.0.0.2 SIP/2.0\n\
         @{at} [0] 8.1 distribute_event: message EventAgentReady\n\
         \tAttributeEventSequenceNumber\t{seq:016x}\n\
         \tAttributeThisDN\t'3001'\n\
         {day}T23:00:00.000 Trc 04120 Check point {day}T23:00:00\n"
    )
}

fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

#[test]
fn a_directory_of_gzipped_local_time_segments_gives_utc_times() {
    let t = ivrstate();
    let dir = t.path("logs");
    std::fs::create_dir(&dir).unwrap();
    // Name order is time order; the older segment is compressed (and named .log all the same:
    // the content says it is gzip).
    std::fs::write(
        dir.join("SIP_P.20260201_000000_000.log.gz"),
        gzip(&segment("2026-02-01", "13:00:00.0000", 1)),
    )
    .unwrap();
    std::fs::write(
        dir.join("SIP_P.20260202_000000_000.log"),
        gzip(&segment("2026-02-02", "13:00:00.0000", 2)),
    )
    .unwrap();
    std::fs::write(
        dir.join("SIP_P.20260203_000000_000.log"),
        segment("2026-02-03", "13:00:00.0000", 3),
    )
    .unwrap();
    let dir_s = dir.display().to_string();
    let summary = t.json(&["ingest", "--json", &dir_s]);
    assert_eq!(summary["appended"], 3, "{summary}");
    assert_eq!(summary["malformed"], 0, "{summary}");
    assert_eq!(
        summary["skipped"], 0,
        "SIP Server noise is not counted: {summary}"
    );
    let times: Vec<String> = exported_events(&t)
        .iter()
        .map(|e| e["time"].as_str().unwrap().to_owned())
        .collect();
    // 13:00 in India is 07:30 UTC.
    assert_eq!(
        times,
        [
            "2026-02-01T07:30:00.000000Z",
            "2026-02-02T07:30:00.000000Z",
            "2026-02-03T07:30:00.000000Z"
        ]
    );

    // A file that is neither text nor gzip is an error naming it, not a silent zero.
    let bin = t.path("store.bin");
    std::fs::write(&bin, [0u8, 159, 146, 150, 0, 0, 1]).unwrap();
    let bin_s = bin.display().to_string();
    let out = t.run(&["ingest", &bin_s]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&bin_s) && stderr.contains("neither a text log nor gzip"),
        "{stderr}"
    );
}

#[test]
fn log_tz_reads_a_headerless_log_in_a_named_zone() {
    let t = ivrstate();
    let log = t.path("berlin.log");
    std::fs::write(
        &log,
        "2015-08-17T12:00:00.000 Trc 04120 Check point 2015-08-17T12:00:00\n\
         @12:00:01.0000 [0] 8.1 distribute_event: message EventAgentReady\n\
         \tAttributeThisDN\t'7001'\n\
         2015-12-17T12:00:00.000 Trc 04120 Check point 2015-12-17T12:00:00\n\
         @12:00:01.0000 [0] 8.1 distribute_event: message EventAgentReady\n\
         \tAttributeThisDN\t'7001'\n",
    )
    .unwrap();
    let log_s = log.display().to_string();
    t.ok(&[
        "ingest",
        "--tserver",
        "TS_B",
        "--log-tz",
        "Europe/Berlin",
        &log_s,
    ]);
    let times: Vec<String> = exported_events(&t)
        .iter()
        .map(|e| e["time"].as_str().unwrap().to_owned())
        .collect();
    // Summer time (+02:00) in August, standard time (+01:00) in December.
    assert_eq!(
        times,
        ["2015-08-17T10:00:01.000000Z", "2015-12-17T11:00:01.000000Z"]
    );
}
