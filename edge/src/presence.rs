//! The edge's local presence map: which sessions this edge holds, and the
//! bounded queue that feeds each one.

use dashmap::DashMap;
use futures::task::AtomicWaker;
use iris_envelope::{InboxSeq, OwnerMark, SessionId, ShardId};
use iris_protocol::ServerFrame;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// A session's bounded delivery queue: one sender (in the presence map),
/// one receiver (the session task).
///
/// Not a tokio `mpsc` channel, because of what an idle session costs: a
/// tokio channel allocates its cache-padded header and a first block of
/// 32 slots at creation, about 0.9 KiB per session measured with
/// heaptrack. This one is an `Arc` of about 100 bytes while empty: its
/// buffer grows with a burst and is given back once drained.
fn queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let shared =
        Arc::new(Shared { items: Mutex::new(Items::default()), waker: AtomicWaker::new(), capacity: capacity.max(1) });
    (QueueSender(shared.clone()), QueueReceiver(shared))
}

struct Shared {
    items: Mutex<Items>,
    waker: AtomicWaker,
    capacity: usize,
}

#[derive(Default)]
struct Items {
    queue: VecDeque<SessionEvent>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Items> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why `QueueSender::try_send` refused.
enum SendError {
    Full,
    Closed,
}

/// The sending end. Dropping it closes the queue: the receiver still gets
/// what is in it, then `None`.
struct QueueSender(Arc<Shared>);

impl QueueSender {
    fn try_send(&self, event: SessionEvent) -> Result<(), SendError> {
        {
            let mut items = self.0.lock();
            if items.closed {
                return Err(SendError::Closed);
            }
            if items.queue.len() >= self.0.capacity {
                return Err(SendError::Full);
            }
            items.queue.push_back(event);
        }
        self.0.waker.wake();
        Ok(())
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.waker.wake();
    }
}

/// Why `QueueReceiver::try_recv` returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued right now.
    Empty,
    /// Nothing queued, and nothing ever will be (the session was cut off or
    /// unregistered).
    Disconnected,
}

/// The receiving end, held by the session.
pub struct QueueReceiver(Arc<Shared>);

impl QueueReceiver {
    /// The next event without waiting.
    pub fn try_recv(&mut self) -> Result<SessionEvent, TryRecvError> {
        let mut items = self.0.lock();
        match items.queue.pop_front() {
            Some(event) => Ok(event),
            None => {
                if items.queue.capacity() > 0 {
                    items.queue = VecDeque::new();
                }
                Err(if items.closed { TryRecvError::Disconnected } else { TryRecvError::Empty })
            }
        }
    }

    /// The next event; `None` once the queue is closed and drained.
    /// Cancel-safe: an event is only taken by a call that returns it.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<SessionEvent>> {
        match self.try_recv() {
            Ok(event) => return Poll::Ready(Some(event)),
            Err(TryRecvError::Disconnected) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        // Register, then look again: an event pushed in between is not missed.
        self.0.waker.register(cx.waker());
        match self.try_recv() {
            Ok(event) => Poll::Ready(Some(event)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}

/// What the edge hands a session.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// A frame to write.
    Frame(Arc<ServerFrame>),
    /// A `presence` frame told by this owner of the seen user's shard:
    /// written unless an earlier owner's ([`crate::SessionState::presence_from`]).
    Presence(Arc<ServerFrame>, OwnerMark),
    /// The shard registered the session.
    Welcome(InboxSeq),
    /// A shard asks the sessions whose users (or subscriptions) it owns to
    /// register again: (its region, its shard).
    Resync(Arc<str>, ShardId),
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
    sessions: DashMap<SessionId, QueueSender>,
    /// Sessions whose token was accepted (the `iris_sessions_connected`
    /// gauge); the map also holds sessions still in their opening.
    accepted: std::sync::atomic::AtomicUsize,
}

impl LocalPresence {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a session; returns the receiving end of its queue.
    ///
    /// A session registers as soon as it starts, before its `hello`: its
    /// queue is also how it hears of shutdown ([`LocalPresence::close_all`]),
    /// so that an idle session waits on one thing only.
    pub fn register(&self, id: SessionId, capacity: usize) -> QueueReceiver {
        let (tx, rx) = queue(capacity);
        self.sessions.insert(id, tx);
        rx
    }

    /// Counts a registered session whose token was accepted.
    pub fn accepted(&self) {
        let n = self.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        metrics::gauge!("iris_sessions_connected").set(n as f64);
    }

    /// Forgets a session (`was_accepted`: it had been counted by `accepted`).
    pub fn unregister(&self, id: SessionId, was_accepted: bool) {
        self.sessions.remove(&id);
        if was_accepted {
            let n = self.accepted.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) - 1;
            metrics::gauge!("iris_sessions_connected").set(n as f64);
        }
    }

    /// The sessions held now.
    pub fn ids(&self) -> Vec<SessionId> {
        self.sessions.iter().map(|e| *e.key()).collect()
    }

    /// Closes one session's queue (a draining edge): it gets what is
    /// already queued, then the end of its queue, and closes.
    pub fn close(&self, id: SessionId) {
        self.sessions.remove(&id);
    }

    /// Closes every session's queue (shutdown): each session gets what is
    /// already queued, then the end of its queue, and closes.
    pub fn close_all(&self) {
        self.sessions.clear();
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
            Err(SendError::Full) if droppable => Delivery::Dropped,
            Err(_) => {
                // The session itself still counts until it has finished.
                self.sessions.remove(&id);
                Delivery::CutOff
            }
        }
    }

    /// Queues an event for every session (a resync). A session whose queue
    /// is full is cut off, as for any delivery that must not be dropped: it
    /// reconnects and resumes, which registers it anew. Returns how many
    /// sessions were cut off.
    pub fn broadcast(&self, event: &SessionEvent) -> usize {
        self.ids().into_iter().filter(|id| self.deliver(*id, event.clone(), false) == Delivery::CutOff).count()
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
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
        assert_eq!(map.deliver(SessionId(1), f(), false), Delivery::Unknown);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_each_event_and_ends_after_what_was_queued() {
        let map = Arc::new(LocalPresence::new());
        let mut rx = map.register(SessionId(7), 64);
        let sender = {
            let map = map.clone();
            tokio::spawn(async move {
                for seq in 0..200u64 {
                    // At the bound the frame is refused, never lost silently:
                    // this sender waits for room, as a test may.
                    loop {
                        match map.deliver(SessionId(7), SessionEvent::Welcome(seq), true) {
                            Delivery::Queued => break,
                            Delivery::Dropped => tokio::task::yield_now().await,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
                map.unregister(SessionId(7), false);
            })
        };
        let mut seen = Vec::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                SessionEvent::Welcome(seq) => seen.push(seq),
                SessionEvent::Frame(_) | SessionEvent::Presence(..) | SessionEvent::Resync(..) => {
                    panic!("no frames sent")
                }
            }
        }
        sender.await.unwrap();
        assert_eq!(seen, (0..200).collect::<Vec<_>>(), "every event, in order, then the end");
    }

    #[test]
    fn a_drained_queue_gives_its_buffer_back() {
        let map = LocalPresence::new();
        let mut rx = map.register(SessionId(1), 100);
        for _ in 0..50 {
            assert_eq!(map.deliver(SessionId(1), SessionEvent::Welcome(0), false), Delivery::Queued);
        }
        assert!(rx.0.lock().queue.capacity() >= 50);
        while rx.try_recv().is_ok() {}
        assert_eq!(rx.0.lock().queue.capacity(), 0);
    }
}
