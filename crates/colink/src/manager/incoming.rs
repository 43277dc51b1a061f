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

/// Most unread requests an [`Incoming`] holds; a request beyond it is refused with `SYSTEM_INTERNAL_ERROR`
/// (each one waits for an answer for at most the connect timeout anyway).
pub const INCOMING_QUEUE: usize = 64;

/// Why a request did not reach its app.
pub(super) enum Undelivered {
    /// No app listens for requests (no [`Incoming`] open).
    NoApp(Box<CollaborationRequest>),
    /// The app's [`Incoming`] holds [`INCOMING_QUEUE`] unread requests.
    Full(Box<CollaborationRequest>),
}

/// The apps that listen for requests.
#[derive(Default)]
pub(super) struct Apps {
    inner: Arc<Mutex<AppTable>>,
}

#[derive(Default)]
struct AppTable {
    next: u64,
    apps: BTreeMap<AppKey, (u64, mpsc::Sender<CollaborationRequest>)>,
}

impl Apps {
    pub(super) fn subscribe(&self, caller: &Caller) -> Incoming {
        let key = (caller.bundle_name().to_owned(), caller.module_name().to_owned(), caller.ability_name().to_owned());
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        let mut table = lock(&self.inner);
        table.next += 1;
        let id = table.next;
        table.apps.insert(key.clone(), (id, tx));
        Incoming { rx, table: Arc::downgrade(&self.inner), key, id }
    }

    /// Hands `request` to its app, or gives it back when no app listens or the app's queue is full.
    pub(super) fn deliver(&self, app: &AppKey, request: Box<CollaborationRequest>) -> Result<(), Undelivered> {
        let table = lock(&self.inner);
        match table.apps.get(app) {
            Some((_, tx)) => tx.try_send(*request).map_err(|e| match e {
                mpsc::error::TrySendError::Full(r) => Undelivered::Full(Box::new(r)),
                mpsc::error::TrySendError::Closed(r) => Undelivered::NoApp(Box::new(r)),
            }),
            None => Err(Undelivered::NoApp(request)),
        }
    }
}

/// The collaboration requests for one app, from [`Manager::incoming`](super::Manager::incoming). A newer
/// `incoming` for the same app replaces this one; dropping it stops the app from receiving requests. It holds
/// at most [`INCOMING_QUEUE`] unread requests; more are refused with `SYSTEM_INTERNAL_ERROR`.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<CollaborationRequest>,
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
