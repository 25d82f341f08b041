//! Operator signals, as GitLab Runner reads them.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpSignal {
    /// SIGQUIT: graceful drain.
    Quit,
    /// SIGTERM / SIGINT: forceful shutdown; a second one exits at once.
    Terminate,
    /// SIGHUP: reload the config.
    Hangup,
}

/// Listens for the signals and forwards them.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<OpSignal>> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (kind, op) in [
        (SignalKind::quit(), OpSignal::Quit),
        (SignalKind::terminate(), OpSignal::Terminate),
        (SignalKind::interrupt(), OpSignal::Terminate),
        (SignalKind::hangup(), OpSignal::Hangup),
    ] {
        let mut stream = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(op).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}
