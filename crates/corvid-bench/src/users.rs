//! Bench accounts: created and logged in concurrently before a workload's clock starts,
//! because password hashing (argon2) is deliberately slow and is not what is measured.

use std::time::Duration;

use anyhow::Context;
use corvid_client::{Client, ClientConfig};

use crate::target::Endpoint;
use corvid_core::Token;
use futures::{StreamExt, TryStreamExt};
use rand::Rng;

/// The password of every bench account.
pub const PASSWORD: &str = "corvid-bench-password";

/// Accounts set up at once. Each hash takes about 19 MiB and most of a core for tens of
/// milliseconds, so more would only queue on the server.
const SETUP_CONCURRENCY: usize = 8;

/// A logged-in user with its own connection.
pub struct User {
    pub index: usize,
    pub name: String,
    pub client: Client,
    pub token: Token,
}

/// A prefix that makes this run's usernames new, so runs against one server never meet.
pub fn run_prefix() -> String {
    format!("b{:08x}", rand::thread_rng().gen::<u32>())
}

/// The client configuration for load: generous timeouts, since a loaded server answers
/// late rather than never.
pub fn client_config(endpoint: &Endpoint) -> ClientConfig {
    let mut config = ClientConfig::new(&endpoint.servers);
    config.transport = endpoint.transport.client();
    config.request_timeout = Duration::from_secs(60);
    config.connect_timeout = Duration::from_secs(10);
    config
}

/// Connects a client to `endpoint`.
pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Client> {
    Client::connect_with(client_config(endpoint))
        .await
        .with_context(|| format!("cannot connect to {}", endpoint.servers.join(",")))
}

/// Creates and logs in `names.len()` accounts, each on its own connection, in `names`'
/// order. Against a cluster, user `i` connects to its `i`-th server (modulo their number),
/// so the users are spread evenly, each able to fail over to every server.
pub async fn create(addr: &Endpoint, names: Vec<String>) -> anyhow::Result<Vec<User>> {
    futures::stream::iter(names.into_iter().enumerate())
        .map(|(index, name)| async move {
            let client = connect(&addr.starting_at(index)).await?;
            client
                .create_account(&name, "", PASSWORD)
                .await
                .with_context(|| format!("cannot create {name}"))?;
            let session = client
                .login(&name, PASSWORD)
                .await
                .with_context(|| format!("cannot log in {name}"))?;
            Ok::<_, anyhow::Error>(User {
                index,
                name,
                client,
                token: session.token,
            })
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}

/// `count` usernames: `<prefix><role><index>`.
pub fn names(prefix: &str, role: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{role}{i}")).collect()
}
