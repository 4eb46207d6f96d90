//! The edge's local presence map: which sessions this edge holds, and the
//! bounded queue that feeds each one.

use dashmap::DashMap;
use iris_envelope::{InboxSeq, SessionId};
use iris_protocol::ServerFrame;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the edge hands a session.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// A frame to write.
    Frame(Arc<ServerFrame>),
    /// The shard registered the session.
    Welcome(InboxSeq),
}

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the session.
    Queued,
    /// Dropped: the session's queue was full and the frame was droppable.
    Dropped,
    /// The session fell behind and was cut off (it will close and resume).
    CutOff,
    /// No such session here.
    Unknown,
}

/// Sessions on this edge, by id. The map holds the only sender of each
/// session's queue: cutting a session off is dropping its entry.
#[derive(Default)]
pub struct LocalPresence {
    sessions: DashMap<SessionId, mpsc::Sender<SessionEvent>>,
}

impl LocalPresence {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a session; returns the receiving end of its queue.
    pub fn register(&self, id: SessionId, capacity: usize) -> mpsc::Receiver<SessionEvent> {
        let (tx, rx) = mpsc::channel(capacity);
        self.sessions.insert(id, tx);
        metrics::gauge!("iris_sessions_connected").set(self.sessions.len() as f64);
        rx
    }

    /// Forgets a session.
    pub fn unregister(&self, id: SessionId) {
        self.sessions.remove(&id);
        metrics::gauge!("iris_sessions_connected").set(self.sessions.len() as f64);
    }

    /// Queues an event for a session. At the bound: droppable events are
    /// dropped; otherwise the session is cut off (its queue closes after what
    /// is already in it, and it disconnects so the client resumes).
    pub fn deliver(&self, id: SessionId, event: SessionEvent, droppable: bool) -> Delivery {
        let result = match self.sessions.get(&id) {
            None => return Delivery::Unknown,
            Some(tx) => tx.try_send(event),
        };
        match result {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Full(_)) if droppable => Delivery::Dropped,
            Err(_) => {
                self.unregister(id);
                Delivery::CutOff
            }
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queues_drop_or_cut_off() {
        let map = LocalPresence::new();
        let mut rx = map.register(SessionId(1), 1);
        let f = || SessionEvent::Welcome(1);
        assert_eq!(map.deliver(SessionId(1), f(), false), Delivery::Queued);
        assert_eq!(map.deliver(SessionId(1), f(), true), Delivery::Dropped);
        assert_eq!(map.len(), 1);
        assert_eq!(map.deliver(SessionId(1), f(), false), Delivery::CutOff);
        assert!(map.is_empty(), "a cut-off session is forgotten");
        assert!(rx.try_recv().is_ok(), "what was queued is still delivered");
        assert!(matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        assert_eq!(map.deliver(SessionId(1), f(), false), Delivery::Unknown);
    }
}
