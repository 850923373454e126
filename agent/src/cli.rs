//! The subcommands behind the `sessionwatch` binary. Each returns the process
//! exit code: 0 success, 1 `--fail-on` threshold reached, 2 bad input or an
//! error that stops the command (with one clear message on stderr).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sessionwatch_sessions::Severity;

use crate::config::Config;
use crate::export::admin::{self, AdminState};
use crate::export::alertmanager::{self, AlertmanagerOptions, AlertmanagerSink, AlertmanagerTask};
use crate::export::alerts::{FindingFanout, JsonLinesSink};
use crate::export::metrics::Metrics;
use crate::export::summary::Summary;
use crate::pipeline::Pipeline;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: `--fail-on` threshold reached.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: bad input, bad config or an environment problem.
pub const EXIT_ERROR: u8 = 2;

/// Sets up `tracing` on stderr. `RUST_LOG` wins over `--log-level`.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn fail(msg: impl std::fmt::Display) -> u8 {
    eprintln!("sessionwatch: error: {msg}");
    EXIT_ERROR
}

/// `sessionwatch check-config FILE`.
pub fn check_config(file: &Path) -> u8 {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = Pipeline::validate(&config) {
        return fail(format_args!("{}: {e}", file.display()));
    }
    println!("# {}: valid; effective configuration:", file.display());
    print!("{}", config.to_toml());
    EXIT_OK
}

/// `sessionwatch check-config FILE --learned CAPTURE...`: validates like
/// [`check_config`], prints the effective config, then replays the captures
/// (findings discarded) and prints, as TOML comments, the session cookie
/// names the traffic taught (`sessions.learn_cookie_names`) with their
/// evidence, and the candidates not learned with what they lack.
pub fn check_config_learned(file: &Path, captures: &[PathBuf]) -> u8 {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = Pipeline::validate(&config) {
        return fail(format_args!("{}: {e}", file.display()));
    }
    println!("# {}: valid; effective configuration:", file.display());
    print!("{}", config.to_toml());
    let findings = FindingFanout {
        json: JsonLinesSink::from_writer(Box::new(std::io::sink())),
        alertmanager: None,
        metrics: match Metrics::new() {
            Ok(m) => Arc::new(Mutex::new(m)),
            Err(e) => return fail(e),
        },
        summary: Summary::default(),
    };
    let mut pipeline = match Pipeline::new(&config, findings) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    for capture in captures {
        if let Err(e) = pipeline.replay_file(capture) {
            return fail(e);
        }
    }
    pipeline.finish();
    let analyzer = pipeline.analyzer();
    println!();
    if !config.sessions.learn_cookie_names {
        println!("# sessions.learn_cookie_names = false: nothing is learned");
        return EXIT_OK;
    }
    println!(
        "# session cookies learned from {} capture file(s), {} exchange(s):",
        captures.len(),
        analyzer.stats().exchanges_total()
    );
    let mut names = Vec::new();
    for (service, l) in analyzer.learned_cookies() {
        let e = &l.evidence;
        println!(
            "#   {} (service {service}): issued on {} login(s), accepted from {} client(s) in {} request(s); without it {} rejected, {} accepted",
            l.name,
            e.login_sessions,
            e.accepted_clients,
            e.accepted_with,
            e.rejected_without,
            e.accepted_without
        );
        names.push(format!("{:?}", l.name));
    }
    if names.is_empty() {
        println!("#   none");
    }
    let candidates = analyzer.learning_candidates();
    if !candidates.is_empty() {
        println!("# candidates not learned:");
        for (service, c) in candidates.iter().take(20) {
            let e = &c.evidence;
            println!(
                "#   {} (service {service}): {} (logins {}, kept at logins {}, clients {}, without it rejected {} / accepted {})",
                c.name,
                c.missing,
                e.login_sessions,
                e.kept_at_login,
                e.accepted_clients,
                e.rejected_without,
                e.accepted_without
            );
        }
        if candidates.len() > 20 {
            println!("#   … and {} more", candidates.len() - 20);
        }
    }
    if !names.is_empty() {
        println!(
            "# to rely on them without learning, add to [sessions] cookie_names: {}",
            names.join(", ")
        );
    }
    EXIT_OK
}

/// Options of `sessionwatch replay`.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Capture files, analysed in order as one timeline.
    pub files: Vec<PathBuf>,
    /// Config file.
    pub config: Option<PathBuf>,
    /// JSON-lines destination (`-` = stdout).
    pub alerts: Option<String>,
    /// Prometheus text of the run.
    pub metrics_out: Option<PathBuf>,
    /// Exit 1 when a finding at or above this severity exists.
    pub fail_on: Option<Severity>,
}

/// Starts the Alertmanager push when `[alerting] alertmanager_url` is set.
fn start_alertmanager(
    config: &Config,
    metrics: &Arc<Mutex<Metrics>>,
    runtime: &tokio::runtime::Handle,
) -> Result<Option<(AlertmanagerSink, AlertmanagerTask, std::time::Duration)>, String> {
    let Some(opts) = AlertmanagerOptions::from_config(&config.alerting) else {
        return Ok(None);
    };
    let m = metrics
        .lock()
        .map_err(|_| "metrics lock poisoned".to_owned())?;
    let (sink, task) = alertmanager::start(&opts, &m, runtime).map_err(|e| e.to_string())?;
    tracing::info!(url = %opts.url, "pushing findings to Alertmanager");
    // On exit, one last delivery attempt bounded by twice the request timeout.
    Ok(Some((sink, task, opts.timeout * 2)))
}

/// What `replay` and `run` share: the pipeline, its metrics and the
/// optional Alertmanager push task (with its shutdown grace).
struct BuiltPipeline {
    pipeline: Pipeline,
    metrics: Arc<Mutex<Metrics>>,
    push_task: Option<(AlertmanagerTask, std::time::Duration)>,
}

/// Builds the finding sinks (JSON lines to `--alerts` or `[alerting] json`,
/// metrics, Alertmanager push on `push_runtime` when configured) and the
/// pipeline behind them. `live`: findings are flushed one by one as they
/// happen; otherwise (replay) they are written in large buffered writes and
/// flushed when the input ends.
fn build_pipeline(
    config: &Config,
    alerts: Option<&str>,
    push_runtime: Option<&tokio::runtime::Handle>,
    live: bool,
) -> Result<BuiltPipeline, String> {
    let json = JsonLinesSink::open(alerts.unwrap_or(&config.alerting.json))
        .map_err(|e| e.to_string())?
        .flush_each(live);
    let metrics = Arc::new(Mutex::new(Metrics::new().map_err(|e| e.to_string())?));
    let (alertmanager, push_task) = match push_runtime {
        Some(rt) => match start_alertmanager(config, &metrics, rt)? {
            Some((sink, task, grace)) => (Some(sink), Some((task, grace))),
            None => (None, None),
        },
        None => (None, None),
    };
    let findings = FindingFanout {
        json,
        alertmanager,
        metrics: metrics.clone(),
        summary: Summary::default(),
    };
    let pipeline = Pipeline::new(config, findings).map_err(|e| e.to_string())?;
    Ok(BuiltPipeline {
        pipeline,
        metrics,
        push_task,
    })
}

/// `sessionwatch replay FILE...`.
pub fn replay(opts: ReplayOptions) -> u8 {
    let config = match Config::load_or_default(opts.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // Replay is synchronous; the Alertmanager push (when configured) runs on
    // a small runtime of its own beside it.
    let push_runtime = match config.alerting.alertmanager_url {
        Some(_) => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(r) => Some(r),
            Err(e) => return fail(format_args!("cannot start the async runtime: {e}")),
        },
        None => None,
    };
    let built = match build_pipeline(
        &config,
        opts.alerts.as_deref(),
        push_runtime.as_ref().map(|r| r.handle()),
        false,
    ) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let (mut pipeline, metrics, push_task) = (built.pipeline, built.metrics, built.push_task);
    let mut result = Ok(());
    for file in &opts.files {
        if let Err(e) = pipeline.replay_file(file) {
            result = Err(e);
            break;
        }
    }
    pipeline.finish();
    if let (Some(rt), Some((task, grace))) = (push_runtime.as_ref(), push_task) {
        rt.block_on(task.shutdown(grace));
    }
    if let Ok(mut m) = metrics.lock() {
        pipeline.sync_metrics(&mut m);
    }
    let summary = pipeline.summary();
    eprint!("{summary}");
    if let Some(path) = &opts.metrics_out {
        let text = metrics.lock().map(|m| m.render()).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            return fail(format_args!(
                "{}: cannot write metrics: {e}",
                path.display()
            ));
        }
    }
    if result.is_ok()
        && let Some(first) = pipeline.truncated_inputs().first()
    {
        // A cut capture still yields the findings it holds (written above),
        // but the run was on bad input: say where, and exit 2.
        return fail(first);
    }
    if let Err(e) = result {
        // Findings up to the bad spot were already written: a truncated pcap
        // still yields what it holds, but the exit code says it was bad.
        return fail(e);
    }
    match (opts.fail_on, summary.max_severity()) {
        (Some(threshold), Some(max)) if max >= threshold => {
            eprintln!("sessionwatch: findings at or above {threshold}: exit 1");
            EXIT_FINDINGS
        }
        _ => EXIT_OK,
    }
}

/// Options of `sessionwatch run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Config file.
    pub config: Option<PathBuf>,
    /// Admin endpoint address.
    pub metrics_listen: Option<SocketAddr>,
    /// JSON-lines destination.
    pub alerts: Option<String>,
    /// Web configuration file of the admin endpoint (TLS, basic auth);
    /// overrides `[admin] web_config_file`.
    pub web_config_file: Option<PathBuf>,
}

/// `sessionwatch run`: live capture until SIGINT/SIGTERM.
pub fn run_live(opts: RunOptions) -> u8 {
    let config = match Config::load_or_default(opts.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format_args!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run_live_async(config, opts))
}

async fn run_live_async(config: Config, opts: RunOptions) -> u8 {
    let built = match build_pipeline(
        &config,
        opts.alerts.as_deref(),
        Some(&tokio::runtime::Handle::current()),
        true,
    ) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let (mut pipeline, metrics, push_task) = (built.pipeline, built.metrics, built.push_task);
    // `[kubernetes]`: the pod sync runs on its own thread from here on;
    // an unreachable API server is retried there, never fatal.
    let _pod_sync = if config.kubernetes.enabled {
        match crate::capture::kubernetes::PodSync::start(
            &config.kubernetes,
            &config.kubernetes_node(),
        ) {
            Ok(s) => {
                pipeline.set_pods(s.cache());
                Some(s)
            }
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    // The web config is checked before anything is attached: a bad
    // certificate or hash stops the agent at once.
    let web = match opts
        .web_config_file
        .as_deref()
        .or(config.admin.web_config_file.as_deref())
    {
        Some(path) => match crate::export::webconfig::WebConfig::load(path) {
            Ok(w) => Some(w),
            Err(e) => return fail(e),
        },
        None => None,
    };
    let ready = Arc::new(AtomicBool::new(false));
    let mut capture = match crate::capture::LiveCapture::start(&config.capture) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let capture_stats = capture.stats_handle();
    let pipeline = Arc::new(Mutex::new(pipeline));
    // Scrapes read the BPF counters and the analysis stats at scrape time,
    // so /metrics is never behind the findings already written.
    let scraped = pipeline.clone();
    // Lock order, as everywhere: the pipeline first, then the metrics (see
    // `admin::Refresh`; the other order deadlocks against the capture task).
    let refresh: admin::Refresh = Arc::new(move |metrics: &Mutex<Metrics>| {
        let p = scraped.lock();
        if let Ok(mut m) = metrics.lock() {
            crate::pipeline::sync_capture_metrics(&capture_stats, &mut m);
            if let Ok(p) = &p {
                p.sync_metrics(&mut m);
            }
        }
    });
    let listen = opts.metrics_listen.unwrap_or(config.admin.listen);
    let state = AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        refresh: Some(refresh),
    };
    let scheme = match &web {
        Some(w) if w.tls.is_some() => "https",
        _ => "http",
    };
    let auth = web.as_ref().is_some_and(|w| w.auth.is_some());
    let (bound, _admin) = match admin::serve_with(listen, state, web).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    tracing::info!(%bound, scheme, basic_auth = auth, "admin endpoint serving /metrics, /healthz, /readyz");
    // Everything privileged is done (programs attached, listener bound,
    // key files read): keep only what hooking new processes needs.
    if config.agent.drop_capabilities {
        match crate::capture::privileges::drop_capabilities() {
            Ok(r) => {
                tracing::info!(
                    kept = ?r.kept,
                    uprobes_need_sys_admin = r.uprobes_need_sys_admin,
                    dropped = ?r.dropped,
                    bounding_dropped = r.bounding_dropped,
                    threads = r.threads,
                    "capabilities dropped"
                );
                if r.uprobes_blocked {
                    tracing::warn!(
                        "this kernel requires CAP_SYS_ADMIN to create uprobes and the agent does not have it: \
                         TLS libraries cannot be hooked (grant SYS_ADMIN, see docs/deploy.md)"
                    );
                }
            }
            // Not fatal: the agent works as before, with more privilege
            // than it needs; the warning says so.
            Err(e) => {
                tracing::warn!(error = %e, "could not drop capabilities; running with all of them")
            }
        }
    }
    ready.store(true, Ordering::Release);
    let result = crate::pipeline::run_live(
        &mut capture,
        pipeline.clone(),
        metrics.clone(),
        crate::capture::shutdown_signal(),
    )
    .await;
    ready.store(false, Ordering::Release);
    if let Ok(mut p) = pipeline.lock() {
        p.finish();
        if let Ok(mut m) = metrics.lock() {
            p.sync_metrics(&mut m);
        }
    }
    if let Some((task, grace)) = push_task {
        task.shutdown(grace).await;
    }
    match result {
        Ok(()) => {
            tracing::info!("stopped; probes detached");
            EXIT_OK
        }
        Err(e) => fail(e),
    }
}

/// `sessionwatch targets`.
pub fn targets(config: Option<&Path>) -> u8 {
    let config = match Config::load_or_default(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // `[kubernetes]`: one list of this node's pods (waited for at most the
    // request timeout) to name the pods of containerised targets.
    let pods = if config.kubernetes.enabled {
        match crate::capture::kubernetes::PodSync::start(
            &config.kubernetes,
            &config.kubernetes_node(),
        ) {
            Ok(s) => {
                if !s.wait_synced(config.kubernetes.request_timeout) {
                    eprintln!(
                        "sessionwatch: kubernetes: no pod list within {:?}; pods unknown",
                        config.kubernetes.request_timeout
                    );
                }
                Some(s)
            }
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    let mut report = crate::capture::targets::discover(&config.capture);
    if let Some(s) = pods {
        report.annotate_pods(&s.cache());
        s.shutdown();
    }
    print!("{report}");
    EXIT_OK
}
