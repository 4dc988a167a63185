//! Process plumbing shared by Cairn's binaries: logging set-up and the
//! shutdown signal. (Behind the `runtime` feature; cores never use it.)

use std::str::FromStr;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event (the default).
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (human or json)")),
        }
    }
}

/// Sets up `tracing` on stderr. The level comes from `RUST_LOG` (default
/// `info`). Calling it twice keeps the first set-up.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// A stream that runs a closure once when dropped: servers use it to learn
/// that a client went away (the response stream of a finished or cancelled
/// RPC is dropped).
pub struct NotifyOnDrop<S> {
    inner: S,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl<S> NotifyOnDrop<S> {
    pub fn new(inner: S, on_drop: impl FnOnce() + Send + 'static) -> Self {
        NotifyOnDrop {
            inner,
            on_drop: Some(Box::new(on_drop)),
        }
    }
}

impl<S: tokio_stream::Stream + Unpin> tokio_stream::Stream for NotifyOnDrop<S> {
    type Item = S::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<S> Drop for NotifyOnDrop<S> {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl<S> std::fmt::Debug for NotifyOnDrop<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NotifyOnDrop")
    }
}
