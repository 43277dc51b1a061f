//! Collaboration requests for local apps: the reference's `onCollaborate`, as a stream per app.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::api::{Caller, ConnectOptions, PeerInfo};
use crate::lock;

/// A peer app asks a local app to collaborate. Answer with [`Manager::accept_connect`] (on a session created
/// for [`peer`](Self::peer)) or [`Manager::reject`], passing [`token`](Self::token).
///
/// [`Manager::accept_connect`]: super::Manager::accept_connect
/// [`Manager::reject`]: super::Manager::reject
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollaborationRequest {
    /// The requesting app on the peer device (`device_id` is the peer device's identity).
    pub peer: PeerInfo,
    /// The local app it addresses, as the peer named it (`service_name` is `None` when the peer named none).
    pub local: PeerInfo,
    /// What the peer asks for.
    pub options: ConnectOptions,
    /// The single-use token of this request.
    pub token: String,
}

type AppKey = (String, String, String);

/// The apps that listen for requests.
#[derive(Default)]
pub(super) struct Apps {
    inner: Arc<Mutex<AppTable>>,
}

#[derive(Default)]
struct AppTable {
    next: u64,
    apps: BTreeMap<AppKey, (u64, mpsc::UnboundedSender<CollaborationRequest>)>,
}

impl Apps {
    pub(super) fn subscribe(&self, caller: &Caller) -> Incoming {
        let key = (caller.bundle_name().to_owned(), caller.module_name().to_owned(), caller.ability_name().to_owned());
        let (tx, rx) = mpsc::unbounded_channel();
        let mut table = lock(&self.inner);
        table.next += 1;
        let id = table.next;
        table.apps.insert(key.clone(), (id, tx));
        Incoming { rx, table: Arc::downgrade(&self.inner), key, id }
    }

    /// Hands `request` to its app, or gives it back when no app listens.
    pub(super) fn deliver(
        &self,
        app: &AppKey,
        request: Box<CollaborationRequest>,
    ) -> Result<(), Box<CollaborationRequest>> {
        let table = lock(&self.inner);
        match table.apps.get(app) {
            Some((_, tx)) => tx.send(*request).map_err(|e| Box::new(e.0)),
            None => Err(request),
        }
    }
}

/// The collaboration requests for one app, from [`Manager::incoming`](super::Manager::incoming). A newer
/// `incoming` for the same app replaces this one; dropping it stops the app from receiving requests.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<CollaborationRequest>,
    table: Weak<Mutex<AppTable>>,
    key: AppKey,
    id: u64,
}

impl Incoming {
    /// The next request, or `None` once the manager is gone or a newer `incoming` replaced this one.
    pub async fn next(&mut self) -> Option<CollaborationRequest> {
        self.rx.recv().await
    }
}

impl Stream for Incoming {
    type Item = CollaborationRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<CollaborationRequest>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            let mut table = lock(&table);
            if table.apps.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                table.apps.remove(&self.key);
            }
        }
    }
}

impl std::fmt::Debug for AppTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppTable").field("apps", &self.apps.len()).finish()
    }
}
