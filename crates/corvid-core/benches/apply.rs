//! Microbenchmarks of the state machine: `apply` of the commands on the message hot path
//! (`Send`, `MarkDelivered`, `MarkRead`) over the in-memory tables, and the query that
//! answers `FetchUnread`. They measure the core's own work (checks, record encoding, key
//! building, the rows each command touches), not a real store's.
//!
//! Run with `cargo bench -p corvid-core --bench apply`.

use corvid_core::query;
use corvid_core::{
    apply, AccountId, Command, MemTables, MessageId, Outcome, SessionKey, SessionPolicy, Token,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;

const NOW: u64 = 1_700_000_000_000;

/// Two accounts, `alice` and `bob`, each with a live session.
fn two_users() -> (MemTables, SessionKey, SessionKey) {
    let mut tables = MemTables::new();
    let mut sessions = Vec::new();
    for (i, name) in ["alice", "bob"].into_iter().enumerate() {
        let created = apply(
            &Command::CreateAccount {
                username: name.into(),
                display_name: String::new(),
                password_hash: "$argon2id$bench".into(),
                now: NOW,
            },
            &mut tables,
        )
        .expect("memory tables do not fail");
        let Some(Outcome::AccountCreated { account, .. }) = created.outcome else {
            panic!("account not created: {created:?}");
        };
        let session = Token([i as u8 + 1; 16]).session_key();
        apply(
            &Command::Login {
                account,
                session,
                policy: SessionPolicy::default(),
                now: NOW,
            },
            &mut tables,
        )
        .expect("memory tables do not fail");
        sessions.push(session);
    }
    (tables, sessions[0], sessions[1])
}

fn send(session: SessionKey, client_id: u64) -> Command {
    Command::Send {
        session,
        to: "bob".into(),
        text: "x".repeat(64),
        client_id,
        now: NOW + 1,
    }
}

/// Tables holding `count` messages from alice to bob.
fn with_messages(count: u64) -> (MemTables, SessionKey, SessionKey) {
    let (mut tables, alice, bob) = two_users();
    for client_id in 1..=count {
        apply(&send(alice, client_id), &mut tables).expect("memory tables do not fail");
    }
    (tables, alice, bob)
}

fn core(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    // The tables grow by one message per iteration, which is what a server sees.
    let (mut tables, alice, _) = with_messages(1000);
    let mut client_id = 1_000_000;
    group.bench_function("send_64b", |b| {
        b.iter(|| {
            client_id += 1;
            apply(black_box(&send(alice, client_id)), &mut tables)
        })
    });
    let (tables, alice, _) = with_messages(1000);
    group.bench_function("send_retry_deduplicated", |b| {
        b.iter_batched_ref(
            || tables.clone(),
            |tables| apply(black_box(&send(alice, 500)), tables),
            BatchSize::LargeInput,
        )
    });
    let (tables, _, _) = with_messages(1000);
    let bob = AccountId(2);
    for batch in [1u64, 100] {
        group.bench_function(format!("mark_delivered_{batch}"), |b| {
            let ids: Vec<MessageId> = (1..=batch).map(MessageId).collect();
            let command = Command::MarkDelivered {
                account: bob,
                ids,
                now: NOW + 2,
            };
            b.iter_batched_ref(
                || tables.clone(),
                |tables| apply(black_box(&command), tables),
                BatchSize::LargeInput,
            )
        });
    }
    let (tables, _, bob_session) = with_messages(1000);
    group.bench_function("mark_read_100", |b| {
        let command = Command::MarkRead {
            session: bob_session,
            ids: (1..=100).map(MessageId).collect(),
            now: NOW + 2,
        };
        b.iter_batched_ref(
            || tables.clone(),
            |tables| apply(black_box(&command), tables),
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("query");
    let (tables, _, _) = with_messages(1000);
    group.bench_function("fetch_unread_100", |b| {
        b.iter(|| query::fetch_unread(black_box(&tables), AccountId(2), 100))
    });
    group.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
