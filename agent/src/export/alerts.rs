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

/// Writes one JSON object per finding, one per line, flushed per line so a
/// reader (`tail -f`, a log shipper) sees each finding as it happens.
pub struct JsonLinesSink {
    out: Box<dyn Write + Send>,
    /// Write errors (a full disk, a closed pipe) are counted, not fatal: the
    /// metrics still carry every finding.
    pub write_errors: u64,
}

impl JsonLinesSink {
    /// `-` is stdout; anything else is a file opened for appending.
    pub fn open(dest: &str) -> Result<JsonLinesSink, AlertSinkError> {
        let out: Box<dyn Write + Send> = if dest == "-" {
            Box::new(io::stdout())
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
            Box::new(BufWriter::new(file))
        };
        Ok(JsonLinesSink {
            out,
            write_errors: 0,
        })
    }

    /// A sink over any writer (tests).
    pub fn from_writer(out: Box<dyn Write + Send>) -> JsonLinesSink {
        JsonLinesSink {
            out,
            write_errors: 0,
        }
    }

    fn write(&mut self, finding: &Finding) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, finding)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

impl FindingSink for JsonLinesSink {
    fn on_finding(&mut self, finding: Finding) {
        if let Err(e) = self.write(&finding) {
            self.write_errors += 1;
            if self.write_errors == 1 {
                tracing::error!(error = %e, "cannot write finding; further write errors are only counted");
            }
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
    fn on_finding(&mut self, finding: Finding) {
        if let Ok(m) = self.metrics.lock() {
            m.findings
                .with_label_values(&[
                    &finding.detector,
                    finding.severity.as_str(),
                    &finding.service,
                ])
                .inc();
        }
        self.summary.count_finding(&finding);
        if let Some(am) = self.alertmanager.as_mut() {
            am.push(&finding);
        }
        self.json.on_finding(finding);
    }
}
