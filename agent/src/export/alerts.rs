//! Finding sinks: JSON lines (stdout or a file) and the fan-out that also
//! counts every finding in the metrics and the run summary.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sessionwatch_sessions::{Finding, FindingSink, Severity};

use crate::export::alertmanager::AlertmanagerSink;
use crate::export::metrics::Metrics;
use crate::export::summary::Summary;

/// Errors opening a finding destination.
#[derive(Debug, thiserror::Error)]
pub enum AlertSinkError {
    /// The JSON-lines file could not be opened for appending.
    #[error("{path}: cannot open alerts file: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Starting capacity of [`JsonLinesSink`]'s line buffer: a typical finding
/// with its evidence is well under 1 KiB.
const LINE_CAPACITY: usize = 2048;

/// Writes one JSON object per finding, one per line. Live, each line is
/// flushed as it is written so a reader (`tail -f`, a log shipper) sees each
/// finding as it happens; replay buffers (64 KiB writes instead of one
/// `write(2)` per finding) and flushes at the end of the input.
pub struct JsonLinesSink {
    out: Box<dyn Write + Send>,
    /// Flush after every finding (live) or only when the buffer fills and
    /// at [`JsonLinesSink::flush`] (replay).
    flush_each: bool,
    /// One finding serialised ahead of a single `write_all`: writing
    /// straight into the boxed writer would make one dynamic call per
    /// token. Reused across findings; shrunk back after an unusually large
    /// one so it stays bounded.
    line: Vec<u8>,
    /// Write errors (a full disk, a closed pipe) are counted, not fatal: the
    /// metrics still carry every finding.
    pub write_errors: u64,
}

impl JsonLinesSink {
    /// `-` is stdout; anything else is a file opened for appending.
    pub fn open(dest: &str) -> Result<JsonLinesSink, AlertSinkError> {
        let out: Box<dyn Write + Send> = if dest == "-" {
            // Stdout is line-buffered by the standard library; the buffer in
            // front of it turns per-line writes into large ones when the
            // sink does not flush per finding.
            Box::new(BufWriter::with_capacity(64 * 1024, io::stdout()))
        } else {
            let path = Path::new(dest);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| AlertSinkError::Open {
                    path: path.to_owned(),
                    source,
                })?;
            Box::new(BufWriter::with_capacity(64 * 1024, file))
        };
        Ok(JsonLinesSink {
            out,
            flush_each: true,
            line: Vec::with_capacity(LINE_CAPACITY),
            write_errors: 0,
        })
    }

    /// A sink over any writer (tests), flushed per finding.
    pub fn from_writer(out: Box<dyn Write + Send>) -> JsonLinesSink {
        JsonLinesSink {
            out,
            flush_each: true,
            line: Vec::with_capacity(LINE_CAPACITY),
            write_errors: 0,
        }
    }

    /// Flush after every finding (the default, for live capture), or only
    /// when the buffer fills and at [`JsonLinesSink::flush`] (replay).
    pub fn flush_each(mut self, on: bool) -> JsonLinesSink {
        self.flush_each = on;
        self
    }

    /// Writes out what is buffered; a failure is counted like a write error.
    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.count_error(&e);
        }
    }

    fn write(&mut self, finding: &Finding) -> io::Result<()> {
        self.line.clear();
        if self.line.capacity() > 4 * LINE_CAPACITY {
            self.line.shrink_to(LINE_CAPACITY);
        }
        finding.write_json(&mut self.line)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        if self.flush_each {
            self.out.flush()?;
        }
        Ok(())
    }

    fn count_error(&mut self, e: &io::Error) {
        self.write_errors += 1;
        if self.write_errors == 1 {
            tracing::error!(error = %e, "cannot write finding; further write errors are only counted");
        }
    }
}

impl Drop for JsonLinesSink {
    /// Buffered findings are written even when the pipeline is dropped on an
    /// error path without [`JsonLinesSink::flush`].
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

impl FindingSink for JsonLinesSink {
    fn on_finding(&mut self, finding: &Finding) {
        if let Err(e) = self.write(finding) {
            self.count_error(&e);
        }
    }
}

/// Sends each finding to the JSON sink (and the Alertmanager push when
/// configured) and counts it in the metrics and the summary.
pub struct FindingFanout {
    /// JSON-lines output.
    pub json: JsonLinesSink,
    /// Alertmanager push (`[alerting] alertmanager_url`); enqueues without
    /// waiting, so it never slows the pipeline.
    pub alertmanager: Option<AlertmanagerSink>,
    /// Metrics to count into.
    pub metrics: Arc<std::sync::Mutex<Metrics>>,
    /// Run summary (replay).
    pub summary: Summary,
}

impl FindingFanout {
    /// Highest severity seen so far.
    pub fn max_severity(&self) -> Option<Severity> {
        self.summary.max_severity()
    }
}

impl FindingSink for FindingFanout {
    fn on_finding(&mut self, finding: &Finding) {
        if let Ok(mut m) = self.metrics.lock() {
            m.count_finding(
                &finding.detector,
                finding.severity.as_str(),
                &finding.service,
            );
        }
        self.summary.count_finding(finding);
        if let Some(am) = self.alertmanager.as_mut() {
            am.push(finding);
        }
        self.json.on_finding(finding);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what reaches it and how often it is flushed.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.lock().expect("lock").1 += 1;
            Ok(())
        }
    }

    fn finding() -> Finding {
        serde_json::from_str(
            r#"{"time":"2026-11-26T06:01:02.123Z","detector":"no_rotation_after_login","severity":"high","service":"shop","node":"node-1","session":"9f2c1a7e5b3d4c60","cookie":"sessionid","client":{"ip":"203.0.113.7","user_agent":null},"request":{"method":"POST","host":"shop.example","path":"/login","status":302},"cwe":"CWE-384","message":"m","evidence":{}}"#,
        )
        .expect("finding")
    }

    #[test]
    fn live_flushes_each_finding_replay_flushes_at_the_end() {
        let live = Recorder::default();
        let mut sink = JsonLinesSink::from_writer(Box::new(live.clone()));
        sink.on_finding(&finding());
        sink.on_finding(&finding());
        assert_eq!(live.0.lock().expect("lock").1, 2, "one flush per finding");

        let replay = Recorder::default();
        let mut sink =
            JsonLinesSink::from_writer(Box::new(BufWriter::new(replay.clone()))).flush_each(false);
        sink.on_finding(&finding());
        sink.on_finding(&finding());
        assert!(replay.0.lock().expect("lock").0.is_empty(), "buffered");
        sink.flush();
        let (text, flushes) = replay.0.lock().expect("lock").clone();
        assert_eq!(flushes, 1);
        let lines: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            let v: serde_json::Value = serde_json::from_slice(l).expect("one JSON object per line");
            assert_eq!(v["detector"], "no_rotation_after_login");
        }
    }

    #[test]
    fn buffered_findings_are_written_when_the_sink_is_dropped() {
        let out = Recorder::default();
        let mut sink =
            JsonLinesSink::from_writer(Box::new(BufWriter::new(out.clone()))).flush_each(false);
        sink.on_finding(&finding());
        drop(sink);
        assert!(out.0.lock().expect("lock").0.ends_with(b"}\n"));
    }
}
