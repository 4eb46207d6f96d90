//! What asks a running node to stop, or to reload its certificate and
//! token keys: the process's signals ([`Signals::os`]), or a [`Trigger`]
//! held by whoever embeds the node ([`Signals::manual`]).

use tokio::sync::mpsc;

/// The requests a running node ([`crate::Node::run`]) listens to.
pub struct Signals {
    pub(crate) stop: mpsc::Receiver<()>,
    pub(crate) reload: mpsc::Receiver<()>,
}

/// Sends requests to a node run with [`Signals::manual`].
#[derive(Clone)]
pub struct Trigger {
    stop: mpsc::Sender<()>,
    reload: mpsc::Sender<()>,
}

impl Trigger {
    /// Asks the node to stop; a second request during the drain ends it.
    pub fn stop(&self) {
        let _ = self.stop.try_send(());
    }

    /// Asks the node to re-read its certificate and JWKS file.
    pub fn reload(&self) {
        let _ = self.reload.try_send(());
    }
}

impl Signals {
    /// Requests sent by hand. Once every [`Trigger`] is dropped, nothing
    /// more is asked (the node runs on until its store fails).
    pub fn manual() -> (Trigger, Signals) {
        let (stop_tx, stop) = mpsc::channel(4);
        let (reload_tx, reload) = mpsc::channel(4);
        (Trigger { stop: stop_tx, reload: reload_tx }, Signals { stop, reload })
    }

    /// The process's signals: SIGTERM and SIGINT stop (a second one ends
    /// the drain early), SIGHUP reloads. Registers the handlers now, so
    /// call it inside the runtime once the node is built: from then on these
    /// signals no longer end the process by themselves.
    pub fn os() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let (trigger, signals) = Self::manual();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = trigger.stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if stop.send(()).await.is_err() {
                    return;
                }
            }
        });
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let reload = trigger.reload.clone();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if reload.send(()).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(_) => tracing::warn!("cannot listen for SIGHUP; reloads need a restart"),
        }
        Ok(signals)
    }
}

/// The next request on `rx`; never, once no one can send one.
pub(crate) async fn next(rx: &mut mpsc::Receiver<()>) {
    if rx.recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}
