//! An in-memory network for tests: servers of one process call each other's
//! [`PeerService`] directly, with encoded bodies as over gRPC, and any server can be cut off
//! from all the others (as openraft's examples do with their `Router`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corvid_store::typ::NodeId;
use futures::future::BoxFuture;

use super::{LinkError, Links};
use crate::peer::{PeerCall, PeerService};

/// The servers of an in-process cluster, and which of them are cut off.
#[derive(Default)]
pub struct Router {
    services: Mutex<BTreeMap<NodeId, Arc<PeerService>>>,
    isolated: Mutex<BTreeSet<NodeId>>,
}

impl Router {
    pub fn new() -> Arc<Router> {
        Arc::new(Router::default())
    }

    /// The links server `from` calls the others with.
    pub fn links(self: &Arc<Router>, from: NodeId) -> Arc<dyn Links> {
        Arc::new(RouterLinks {
            router: self.clone(),
            from,
        })
    }

    /// Makes `service` reachable as server `id` (replacing an earlier one: a restart).
    pub fn add(&self, id: NodeId, service: Arc<PeerService>) {
        lock(&self.services).insert(id, service);
    }

    /// Makes server `id` unreachable, as if it had stopped.
    pub fn remove(&self, id: NodeId) {
        lock(&self.services).remove(&id);
    }

    /// Cuts server `id` off from every other: nothing it sends or is sent arrives.
    pub fn isolate(&self, id: NodeId) {
        lock(&self.isolated).insert(id);
    }

    /// Reconnects server `id`.
    pub fn heal(&self, id: NodeId) {
        lock(&self.isolated).remove(&id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct RouterLinks {
    router: Arc<Router>,
    from: NodeId,
}

impl Links for RouterLinks {
    fn call<'a>(
        &'a self,
        target: NodeId,
        _address: &'a str,
        call: PeerCall,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, LinkError>> {
        Box::pin(async move {
            let cut = {
                let isolated = lock(&self.router.isolated);
                isolated.contains(&self.from) || isolated.contains(&target)
            };
            let service = lock(&self.router.services).get(&target).cloned();
            let Some(service) = service.filter(|_| !cut) else {
                return Err(LinkError::NotSent(format!("node {target} is unreachable")));
            };
            match tokio::time::timeout(timeout, service.handle(call, &body)).await {
                Ok(Ok(answer)) => {
                    // A cut made while the call was served loses its answer.
                    if lock(&self.router.isolated).contains(&self.from) {
                        return Err(LinkError::Lost(format!("node {} was cut off", self.from)));
                    }
                    Ok(answer)
                }
                Ok(Err(e)) => Err(LinkError::Refused(e.to_string())),
                Err(_) => Err(LinkError::Lost(format!(
                    "node {target} did not answer {call:?} within {timeout:?}"
                ))),
            }
        })
    }
}
