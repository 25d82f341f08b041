//! The job's output as it leaves the executor: byte chunks, each with the cursor to persist.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How far a consumer has read a job's output: the step (its position in the job's plan) and how
/// many log messages of that step's container it has seen.
///
/// A message count, not a timestamp: the engine stamps stdout and stderr messages in two copiers and
/// stamps a partial line when it completes, so timestamps in a container's log are not in log order
/// and "everything up to T" is not a prefix of the log. The log's order itself is stable, so "the
/// first N messages" is. A step run by exec in a warm container (see the executor) counts bytes
/// of its output file instead: that file is its record.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogCursor {
    pub step: u16,
    pub messages: u64,
}

/// A piece of the job's output. `cursor` is the position right after it: once `data` is safely
/// stored (sent to the coordinator), persist `cursor` and hand it to [`crate::Executor::resume`] after a
/// restart to continue with the very next byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceChunk {
    pub data: Bytes,
    pub cursor: LogCursor,
}

/// Where the executor streams output. Unmasked: masking is the trace buffer's job downstream.
pub type TraceSink = mpsc::Sender<TraceChunk>;

/// The executor's writer: its own messages and the containers' output, in order.
pub(crate) struct Trace {
    sink: Option<TraceSink>,
    pub(crate) cursor: LogCursor,
}

/// A drover error line, in GitLab Runner's colours: for the executor's traces and for the daemon's
/// reports of jobs the executor never saw.
pub fn error_line(text: &str) -> String {
    format!("\x1b[31;1mERROR: {text}\x1b[0;m\n")
}

impl Trace {
    pub(crate) fn new(sink: Option<TraceSink>) -> Trace {
        Trace {
            sink,
            cursor: LogCursor::default(),
        }
    }

    /// One of drover's own lines (it carries the current cursor: it does not advance it).
    pub(crate) async fn say(&mut self, text: impl Into<String>) {
        self.emit(Bytes::from(text.into())).await;
    }

    /// A drover warning, in GitLab Runner's colours.
    pub(crate) async fn warn(&mut self, text: &str) {
        self.say(format!("\x1b[0;33mWARNING: {text}\x1b[0;m\n"))
            .await;
    }

    pub(crate) async fn error(&mut self, text: &str) {
        self.say(error_line(text)).await;
    }

    pub(crate) async fn section(&mut self, text: &str) {
        self.say(format!("\x1b[36;1m{text}\x1b[0;m\n")).await;
    }

    /// Output of a step's container; `cursor` counts it.
    pub(crate) async fn output(&mut self, data: Bytes, cursor: LogCursor) {
        self.cursor = cursor;
        self.emit(data).await;
    }

    async fn emit(&mut self, data: Bytes) {
        if let Some(sink) = &self.sink {
            // A consumer that went away does not stop the job: it still runs to its end.
            if sink
                .send(TraceChunk {
                    data,
                    cursor: self.cursor,
                })
                .await
                .is_err()
            {
                self.sink = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_order_by_step_then_messages() {
        let a = LogCursor {
            step: 0,
            messages: 99,
        };
        let b = LogCursor {
            step: 1,
            messages: 0,
        };
        assert!(a < b);
        assert!(
            LogCursor {
                step: 1,
                messages: 2
            } > b
        );
    }

    #[tokio::test]
    async fn own_lines_carry_the_current_cursor() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut trace = Trace::new(Some(tx));
        let at = LogCursor {
            step: 2,
            messages: 5,
        };
        trace.output(Bytes::from_static(b"out\n"), at).await;
        trace.say("note\n").await;
        assert_eq!(rx.recv().await.unwrap().cursor, at);
        let note = rx.recv().await.unwrap();
        assert_eq!((note.data.as_ref(), note.cursor), (&b"note\n"[..], at));
    }
}
