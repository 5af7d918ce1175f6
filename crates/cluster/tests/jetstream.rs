//! The cluster crate against real nats-server processes (tests/src/nats.rs): publishing is
//! idempotent by Msg-Id, the pipeline stores every batch in order, the consumer delivers the
//! stream in order from any sequence, and a replica's checkpoint survives reopening.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ivrstate_cluster::consume::read_subject;
use ivrstate_cluster::consume::{consume, Delivery};
use ivrstate_cluster::publish::{
    escape_source, messages, parse_lines_header, publish_after, unescape_source, Guarded, Pipeline,
};
use ivrstate_cluster::replica::Replica;
use ivrstate_cluster::{Cluster, ClusterConfig};
use ivrstate_model::{Envelope, Event, Micros, TLibEvent, TLibKind, TServerName};
use ivrstate_store::{Store, StoreOptions};
use ivrstate_tests::nats::{nats_server_or_skip, NatsCluster};
use std::time::Duration;
use tokio::sync::mpsc;

fn link(ts: &str, seq: u64) -> Envelope {
    Envelope {
        time: Micros(1_700_000_000_000_000 + seq as i64),
        recorded: Micros(1_700_000_000_000_000),
        event: Event::TLib(TLibEvent {
            tserver: TServerName::from(ts),
            source_seq: Some(seq),
            kind: if seq & 1 == 0 {
                TLibKind::LinkConnected
            } else {
                TLibKind::LinkDisconnected
            },
        }),
    }
}

async fn read_all(cluster: &Cluster, from: u64, count: usize) -> Vec<Delivery> {
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(consume(cluster.clone(), from, tx));
    let mut out = Vec::new();
    while out.len() < count {
        let d = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a delivery within 30 s")
            .expect("consumer running");
        out.push(d);
    }
    task.abort();
    out
}

#[test]
fn published_batches_are_stored_once_in_order_and_replayed_from_any_sequence() {
    let Some(bin) = nats_server_or_skip("cluster jetstream") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = ClusterConfig::parse(&nats.urls(), "TEST").unwrap();
        let cluster = Cluster::connect(config).await.unwrap();
        let pipeline = Pipeline::start(&cluster);

        // The same batch twice: the second is a duplicate, stored once. Where it came from
        // travels with it (a source with a space, a '%' and a newline in its name).
        let batch: Vec<Envelope> = (1..=10).map(|s| link("TS1", s)).collect();
        let lines: Vec<u64> = (1..=10).map(|i| 3 + i * 17).collect();
        let source = "file /logs/a b%\n.log";
        let first = pipeline
            .publish("TEST", &batch, source, &lines)
            .await
            .unwrap()
            .await
            .unwrap();
        let again = pipeline
            .publish("TEST", &batch, source, &lines)
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!((first.new, first.duplicates), (10, 0));
        assert_eq!((again.new, again.duplicates), (0, 10));
        assert_eq!(again.last_stream_seq, first.last_stream_seq);
        assert_eq!(cluster.last_sequence().await, 1);

        // Many batches in flight at once, two T-Servers interleaved: one message per run of
        // one source, all stored in the order sent.
        let mut waits = Vec::new();
        let mut sent = Vec::new();
        for i in 0..50u64 {
            let b = vec![link("TS1", 100 + i), link("TS2", 100 + i)];
            sent.extend(b.clone());
            waits.push(
                pipeline
                    .publish("TEST", &b, "feed x #1", &[])
                    .await
                    .unwrap(),
            );
        }
        for w in waits {
            assert_eq!(w.await.unwrap().new, 2);
        }
        assert_eq!(cluster.last_sequence().await, 101);

        let all = read_all(&cluster, 1, 101).await;
        assert_eq!(
            all.iter().map(|d| d.stream_seq).collect::<Vec<_>>(),
            (1..=101).collect::<Vec<_>>()
        );
        assert_eq!(all[0].envelopes, batch);
        assert_eq!((all[0].source.as_str(), &all[0].lines), (source, &lines));
        assert!(all[1..]
            .iter()
            .all(|d| d.source == "feed x #1" && d.lines.is_empty()));
        assert_eq!(all[1].subject, "TEST.ts.TS1");
        assert_eq!(all[2].subject, "TEST.ts.TS2");
        let rest: Vec<Envelope> = all[1..].iter().flat_map(|d| d.envelopes.clone()).collect();
        assert_eq!(rest, sent);

        // From the middle.
        let tail = read_all(&cluster, 90, 12).await;
        assert_eq!(tail[0].stream_seq, 90);
        assert_eq!(tail[11].stream_seq, 101);
    });
}

/// Compare-and-set on a subject (what `config apply --cluster` relies on): a publish that names
/// the subject's last sequence is stored; one that names a sequence the subject has moved past
/// (another writer came first) is refused and stores nothing; the same bytes sent again (a
/// retry) are not a conflict.
#[test]
fn a_guarded_publish_is_refused_once_the_subject_has_moved() {
    let Some(bin) = nats_server_or_skip("cluster guarded publish") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = ClusterConfig::parse(&nats.urls(), "GUARD").unwrap();
        let cluster = Cluster::connect(config).await.unwrap();
        let subject = "GUARD.config";
        let empty = read_subject(&cluster, subject).await.unwrap();
        assert_eq!((empty.envelopes.len(), empty.last_seq), (0, 0));
        // Another subject's message does not move this one.
        let pipeline = Pipeline::start(&cluster);
        pipeline
            .publish("GUARD", &[link("TS1", 1)], "test", &[])
            .await
            .unwrap()
            .await
            .unwrap();

        // Two writers read the empty subject; the first one's change lands.
        let first = vec![config_event(1), config_event(2)];
        let second = vec![config_event(3)];
        let stored = publish_after(&cluster, &first, "test", 0).await.unwrap();
        let Guarded::Stored(p) = stored else {
            panic!("refused: {stored:?}")
        };
        assert_eq!((p.new, p.last_stream_seq), (2, 2));
        // The same bytes again (a retry after a timeout): a duplicate, not a conflict.
        let again = publish_after(&cluster, &first, "test", 0).await.unwrap();
        assert_eq!(
            again,
            Guarded::Stored(ivrstate_cluster::publish::Published {
                new: 0,
                duplicates: 2,
                last_stream_seq: 2
            })
        );
        // The second one read the same old state: refused, nothing stored.
        assert_eq!(
            publish_after(&cluster, &second, "test", 0).await.unwrap(),
            Guarded::Moved
        );
        assert_eq!(cluster.last_sequence().await, 2);
        // Read again, it builds on what is there now.
        let now = read_subject(&cluster, subject).await.unwrap();
        assert_eq!((now.envelopes, now.last_seq), (first, 2));
        assert!(matches!(
            publish_after(&cluster, &second, "test", now.last_seq)
                .await
                .unwrap(),
            Guarded::Stored(_)
        ));
        let now = read_subject(&cluster, subject).await.unwrap();
        assert_eq!((now.envelopes.len(), now.last_seq), (3, 3));
    });
}

#[test]
fn message_ids_depend_on_the_bytes_and_their_source_only() {
    let two = [link("TS1", 1), link("TS1", 2)];
    let a = messages("S", &two, "file a.log", &[5, 9]).unwrap();
    let b = messages("S", &two, "file a.log", &[5, 9]).unwrap();
    let c = messages(
        "S",
        &[link("TS1", 1), link("TS1", 3)],
        "file a.log",
        &[5, 9],
    )
    .unwrap();
    let other_file = messages("S", &two, "file b.log", &[5, 9]).unwrap();
    let other_lines = messages("S", &two, "file a.log", &[5, 10]).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].id, b[0].id);
    assert_ne!(a[0].id, c[0].id);
    assert_ne!(a[0].id, other_file[0].id);
    assert_ne!(a[0].id, other_lines[0].id);
    assert_eq!(a[0].id.len(), 64);
    let mixed = messages(
        "S",
        &[link("A", 1), link("A", 2), link("B", 1), link("A", 3)],
        "file m.log",
        &[1, 2, 3, 4],
    )
    .unwrap();
    // Each message carries the lines of its own envelopes.
    let lines: Vec<Option<Vec<u64>>> = mixed
        .iter()
        .map(|m| m.lines.as_deref().and_then(parse_lines_header))
        .collect();
    assert_eq!(lines, [Some(vec![1, 2]), Some(vec![3]), Some(vec![4])]);
    assert_eq!(
        mixed
            .iter()
            .map(|m| (m.subject.as_str(), m.records))
            .collect::<Vec<_>>(),
        vec![("S.ts.A", 2), ("S.ts.B", 1), ("S.ts.A", 1)]
    );
}

fn delivery(seq: u64, envelopes: Vec<Envelope>) -> Delivery {
    Delivery {
        stream_seq: seq,
        subject: "S.x".into(),
        envelopes,
        source: "test".into(),
        lines: Vec::new(),
    }
}

#[test]
fn sources_survive_their_header_escaping() {
    for source in [
        "file /var/log/ts.log",
        " feed 10.0.0.5:4000 #1 (token r\u{e9}corder)\r\n%41%",
        "",
    ] {
        let escaped = escape_source(source);
        assert!(escaped.bytes().all(|b| b.is_ascii_graphic()), "{escaped}");
        assert_eq!(unescape_source(&escaped), source);
    }
    assert_eq!(unescape_source("a%2"), "a%2");
}

fn config_event(n: u64) -> Envelope {
    use ivrstate_model::{ConfigEvent, IvrName};
    Envelope {
        time: Micros(n as i64),
        recorded: Micros(n as i64),
        event: Event::Config(ConfigEvent::IvrRemoved {
            name: IvrName::from("IVR"),
        }),
    }
}

/// A crash after an append and before its checkpoint reached the disk: the records newer than
/// the checkpoint are matched with the messages delivered again, so the log ends as it would
/// have without the crash (configuration events, which have no dedup key, not doubled).
#[test]
fn records_newer_than_the_checkpoint_are_matched_not_appended_again() {
    let dir = tempfile::tempdir().unwrap();
    let messages = [
        delivery(1, vec![link("TS", 1), link("TS", 2)]),
        delivery(2, vec![config_event(5), link("TS", 2), link("TS", 3)]),
        delivery(3, vec![config_event(6), link("TS", 4)]),
    ];
    // The node without a crash.
    let clean = {
        let store = Store::open(&dir.path().join("clean"), StoreOptions::default()).unwrap();
        let mut r = Replica::open(&store).unwrap();
        for m in messages.iter() {
            let (envs, last) = r.to_append(std::slice::from_ref(m)).unwrap();
            let report = store.log().append(&envs).unwrap();
            r.applied(&store, last, report.last_seq).unwrap();
        }
        store
            .log()
            .read(1, store.log().last_seq())
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
    };
    // The crashed node: messages 1 and 2 appended, only message 1's checkpoint stored.
    let path = dir.path().join("crashed");
    {
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        let mut r = Replica::open(&store).unwrap();
        let (envs, last) = r.to_append(&messages[..1]).unwrap();
        let report = store.log().append(&envs).unwrap();
        r.applied(&store, last, report.last_seq).unwrap();
        let (envs, _) = r.to_append(&messages[1..2]).unwrap();
        store.log().append(&envs).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    let mut r = Replica::open(&store).unwrap();
    assert_eq!(r.next_stream_seq(), 2);
    let (envs, last) = r.to_append(&messages[1..]).unwrap();
    assert_eq!(last, 3);
    let report = store.log().append(&envs).unwrap();
    r.applied(&store, last, report.last_seq).unwrap();
    let crashed: Vec<_> = store
        .log()
        .read(1, store.log().last_seq())
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(crashed, clean);
    assert_eq!(clean.len(), 6, "message 2's TS 2 is a duplicate");
}

#[test]
fn a_store_with_events_from_outside_the_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store.log().append(&[link("TS", 1)]).unwrap();
    let e = Replica::open(&store).err().expect("refused");
    assert!(
        e.to_string().contains("did not come from a cluster stream"),
        "{e}"
    );
}
