//! The service over a node whose effects the test can hold back from the hub, as a
//! follower's are when it installs a snapshot instead of applying entries: subscriptions
//! that must resume after the state is replaced, and background writes refused for a while.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corvid_core::{
    Effect, Event, Message, MessageId, ReceiptStatus, Request, Response, SubscribeFrom, Token,
};
use corvid_raft::Node;
use corvid_server::hub::{Hub, HubLimits};
use corvid_server::service::{Service, ServiceConfig, SessionEvents};
use corvid_server::Config;

const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(10);

/// Whether the node's effects reach the hub.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    /// Effects are dropped, as for the entries an installed snapshot covers.
    Dropped,
}

struct Harness {
    service: Arc<Service>,
    gate: Arc<Mutex<Gate>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::ephemeral(dir.path());
        let hub = Arc::new(Hub::new(HubLimits::default()));
        let gate = Arc::new(Mutex::new(Gate::Open));
        let (sink_hub, sink_gate) = (hub.clone(), gate.clone());
        let effects: corvid_store::EffectSink = Arc::new(move |effects: &[Effect]| {
            if *sink_gate.lock().unwrap() == Gate::Open {
                sink_hub.dispatch(effects);
            }
        });
        let node = Node::open(
            corvid_raft::NodeConfig {
                min_free_bytes: config.limits.min_free_disk_bytes,
                ..corvid_raft::NodeConfig::single_server(dir.path().to_path_buf())
            },
            effects,
        )
        .await
        .unwrap();
        node.initialize_alone().await.unwrap();
        node.wait_ready(WAIT).await.unwrap();
        let service = Service::new(
            node,
            hub,
            ServiceConfig {
                session_policy: config.session_policy(),
                max_text_bytes: config.limits.max_text_bytes,
                login: config.login.clone(),
                metrics: corvid_server::metrics::Metrics::off(),
            },
        )
        .unwrap();
        Harness {
            service,
            gate,
            _dir: dir,
        }
    }

    fn set_gate(&self, gate: Gate) {
        *self.gate.lock().unwrap() = gate;
    }

    /// Registers `name` and logs in.
    async fn user(&self, name: &str) -> Token {
        self.service
            .handle(Request::CreateAccount {
                username: name.into(),
                display_name: name.into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap();
        match self
            .service
            .handle(Request::Login {
                username: name.into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap()
        {
            Response::LoggedIn { token, .. } => token,
            other => panic!("not logged in: {other:?}"),
        }
    }

    async fn send(&self, from: Token, to: &str, text: &str) -> Message {
        match self
            .service
            .handle(Request::Send {
                token: from,
                to: to.into(),
                text: text.into(),
                client_id: 0,
            })
            .await
            .unwrap()
        {
            Response::Sent { message, .. } => message,
            other => panic!("not sent: {other:?}"),
        }
    }
}

async fn next_event(subscription: &mut SessionEvents) -> Event {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

async fn next_message(subscription: &mut SessionEvents) -> String {
    match next_event(subscription).await {
        Event::Message(message) => message.text,
        other => panic!("not a message: {other:?}"),
    }
}

/// Nothing more is pushed within a short wait (the absence of a repeat).
async fn nothing_more(subscription: &mut SessionEvents) {
    let next = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
    assert!(next.is_err(), "unexpected {next:?}");
}

#[tokio::test]
async fn a_subscription_gets_what_a_replaced_state_brought_once_and_in_order() {
    let harness = Harness::start().await;
    let alice = harness.user("alice").await;
    // One subscription from now, one replaying its inbox first.
    for (name, from) in [
        ("bob", SubscribeFrom::Now),
        ("carol", SubscribeFrom::After(MessageId(0))),
    ] {
        let token = harness.user(name).await;
        harness.send(alice, name, "before").await;
        let mut subscription = harness.service.subscribe(token, from).await.unwrap();
        if from != SubscribeFrom::Now {
            assert_eq!(next_message(&mut subscription).await, "before");
        }
        harness.send(alice, name, "pushed").await;
        assert_eq!(next_message(&mut subscription).await, "pushed");

        // Applied here without their effects, as when a snapshot is installed: no push.
        harness.set_gate(Gate::Dropped);
        harness.send(alice, name, "missed 1").await;
        harness.send(alice, name, "missed 2").await;
        harness.set_gate(Gate::Open);
        harness.service.hub().dispatch(&[Effect::StateReplaced]);
        harness.send(alice, name, "live").await;

        for text in ["missed 1", "missed 2", "live"] {
            assert_eq!(next_message(&mut subscription).await, text, "{name}");
        }
        nothing_more(&mut subscription).await;
    }
}

#[tokio::test]
async fn a_delivered_receipt_is_written_once_writes_are_accepted_again() {
    let harness = Harness::start().await;
    let alice = harness.user("alice").await;
    let bob = harness.user("bob").await;
    let mut alice_events = harness
        .service
        .subscribe(alice, SubscribeFrom::Now)
        .await
        .unwrap();
    let mut bob_events = harness
        .service
        .subscribe(bob, SubscribeFrom::Now)
        .await
        .unwrap();

    // The message is applied, then every write is refused (`storage_full`) before it is
    // pushed to bob, so its delivery mark cannot be written for now.
    harness.set_gate(Gate::Dropped);
    let message = harness.send(alice, "bob", "hello").await;
    harness.service.node().set_min_free_bytes(u64::MAX);
    harness.set_gate(Gate::Open);
    harness.service.hub().dispatch(&[Effect::Message {
        to: corvid_core::AccountId(2),
        message: message.clone(),
    }]);
    assert_eq!(next_message(&mut bob_events).await, "hello");
    // Any write is refused now.
    let refused = harness
        .service
        .handle(Request::MarkRead {
            token: alice,
            ids: vec![],
        })
        .await;
    assert_eq!(
        refused.unwrap_err().code,
        corvid_core::ErrorCode::StorageFull
    );
    // Besides that read's, the delivery mark is refused before the disk has room again.
    let refusals = |harness: &Harness| harness.service.node().store_metrics().writes_refused;
    let deadline = tokio::time::Instant::now() + WAIT;
    while refusals(&harness) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mark was not tried"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    harness
        .service
        .node()
        .set_min_free_bytes(corvid_store::disk::LEAST_MIN_FREE_BYTES);
    assert_eq!(
        next_event(&mut alice_events).await,
        Event::Receipt {
            id: message.id,
            status: ReceiptStatus::Delivered
        }
    );
}
