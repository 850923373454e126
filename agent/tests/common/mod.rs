//! Harness shared by the end-to-end tests: preconditions (root, tools, the
//! CI switch that turns a SKIP into a failure), loopback ports, child
//! processes that are always stopped, the upstream session app, and reading
//! the Grafana dashboard's expressions.
// Each test crate uses a different subset of this module.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// The upstream app: issues `sessionid` on first visit, answers a login
/// POST with a redirect and keeps the ID (no rotation), accepts any known
/// session afterwards, and ends it at `/logout` with a deletion cookie.
pub const APP: &str = r#"
import http.server, secrets, sys
SESS = set()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def sid(self):
        for p in self.headers.get("Cookie", "").split(";"):
            k, _, v = p.strip().partition("=")
            if k == "sessionid" and v in SESS: return v
    def send(self, code, extra=()):
        body = b"ok\n"
        self.send_response(code)
        for k, v in extra: self.send_header(k, v)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/logout":
            SESS.discard(self.sid())
            return self.send(302, [("Location", "/"), ("Set-Cookie", "sessionid=; Max-Age=0; Path=/")])
        if self.sid() is None:
            s = secrets.token_urlsafe(32); SESS.add(s)
            return self.send(200, [("Set-Cookie", f"sessionid={s}; Path=/; Secure; HttpOnly; SameSite=Lax")])
        self.send(200)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send(302, [("Location", "/account")])
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

pub fn required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
        || std::env::var_os("SESSIONWATCH_E2E_REQUIRED").is_some_and(|v| v == "1")
}

pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops and reaps its process on drop, so a failing test leaves nothing:
/// SIGTERM first (an nginx master killed with SIGKILL orphans its workers),
/// SIGKILL after two seconds.
pub struct Guard(pub Child);

impl Guard {
    /// SIGTERM, then SIGKILL after `grace`; the exit status if it exited
    /// on its own.
    pub fn stop_within(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(s)) = self.0.try_wait() {
            return Some(s);
        }
        // SAFETY: kill(2) on our own, not yet reaped child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop_within(Duration::from_secs(2));
    }
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every PromQL expression in the dashboard: panel targets (rows nest
/// panels) and template-variable queries (as in tests/dashboards.rs).
pub fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_owned()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = match &v["query"] {
                Value::String(s) => s.clone(),
                other => other["query"].as_str().unwrap_or_default().to_owned(),
            };
            out.push((format!("variable {}", v["name"]), q));
        }
    }
    out
}

/// `sessionwatch_*` identifiers outside string literals.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &expr[start..i];
            let in_string = expr[..start].matches('"').count() % 2 == 1;
            if word.starts_with("sessionwatch_") && !in_string {
                names.push(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Synthetic HTTP/1 traffic as a pcap stream (hostile load, secrets scan).
pub mod traffic;

/// Ends a test whose preconditions are not met: with `required()` set it
/// fails, otherwise it prints a SKIP banner that cannot be missed in the
/// output. Returns true when something is missing (the caller returns).
pub fn skip_if_missing<S: AsRef<str>>(test: &str, missing: &[S]) -> bool {
    if missing.is_empty() {
        return false;
    }
    let missing: Vec<&str> = missing.iter().map(AsRef::as_ref).collect();
    let msg = format!(
        "SKIP {test}: missing {} — this test did NOT run",
        missing.join(", ")
    );
    assert!(
        !required(),
        "{msg} (CI/SESSIONWATCH_E2E_REQUIRED set: failing instead of skipping)"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("\n!!!!!!!!!! {msg} !!!!!!!!!!\n\n").as_bytes(),
    );
    true
}

/// One `GET` over a fresh loopback connection (`Connection: close`): the
/// status code (0 when unparsable) and the whole response. Panics when
/// nothing listens on `port`.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// Starts the live agent, `sessionwatch --log-level trace run --config
/// <dir>/sw.toml` plus whatever `configure` adds (`--alerts`, environment),
/// with stdout and stderr in `<dir>/agent.out` and `<dir>/agent.err`, and
/// waits until `/readyz` on `admin_port` answers 200. Readiness means every
/// probe is attached, so traffic sent afterwards is seen. Panics with the
/// agent's log if it exits first or is not ready within `within`.
///
/// Trace level on purpose: the live tests scan the agent's output for the
/// raw session IDs they used (#8), so the most verbose logging is the one
/// that must stay clean.
pub fn spawn_ready_agent(
    dir: &Path,
    admin_port: u16,
    within: Duration,
    configure: impl FnOnce(&mut std::process::Command),
) -> Guard {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sessionwatch"));
    cmd.args(["--log-level", "trace", "run", "--config"])
        .arg(dir.join("sw.toml"));
    configure(&mut cmd);
    let mut agent = Guard(
        cmd.stdout(std::fs::File::create(dir.join("agent.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("agent.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + within;
    loop {
        if TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
            && http_get(admin_port, "/readyz").0 == 200
        {
            return agent;
        }
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!(
                "agent exited early ({status}): {}",
                std::fs::read_to_string(dir.join("agent.err")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "agent not ready after {} s",
            within.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A two-day self-signed RSA certificate for `cn` (unencrypted key): what
/// the test nginx servers present. Panics when openssl fails.
pub fn self_signed_cert(openssl: &Path, cn: &str, key: &Path, cert: &Path) {
    let st = std::process::Command::new(openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl req failed");
}

/// A TLS-terminating nginx (one worker, keep-alive) in front of the
/// session app ([`APP`]), with its config, certificate, pid file and logs
/// in its own directory, on ports picked at run time.
pub struct ShopServer {
    /// Directory of the app, the nginx config, `cert.pem`, `key.pem` and
    /// `logs/`.
    pub dir: PathBuf,
    /// Port of the app (plain HTTP, what nginx proxies to).
    pub app_port: u16,
    /// Port nginx terminates TLS on.
    pub tls_port: u16,
    _app: Guard,
    _nginx: Guard,
}

/// What differs between the shop servers of the e2e tests.
pub struct ShopOptions<'a> {
    /// nginx runs as a copy of its binary under this name (at most 15
    /// bytes: the kernel's `comm`), so a live agent restricted with
    /// `[capture] processes = [comm]` captures this server only, not the
    /// servers of tests running at the same time. Without `[[services]]`
    /// it is also the findings' `service`.
    pub comm: &'a str,
    /// Server name: the certificate's CN and nginx's `server_name`.
    pub host: &'a str,
    /// Adds `http2` to the TLS listener.
    pub http2: bool,
    /// Extra directives for nginx's `http` block (e.g. a longer
    /// `keepalive_timeout`).
    pub http_directives: &'a str,
}

/// Starts the app and nginx in `dir` (created; emptied first) and waits
/// until both listen. Panics when a tool fails.
pub fn spawn_shop(
    python: &Path,
    nginx: &Path,
    openssl: &Path,
    dir: &Path,
    options: &ShopOptions<'_>,
) -> ShopServer {
    assert!(options.comm.len() <= 15, "comm {:?} too long", options.comm);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    self_signed_cert(
        openssl,
        options.host,
        &dir.join("key.pem"),
        &dir.join("cert.pem"),
    );
    let (app_port, tls_port) = (free_port(), free_port());
    std::fs::write(dir.join("app.py"), APP).unwrap();
    let app = Guard(
        std::process::Command::new(python)
            .arg(dir.join("app.py"))
            .arg(app_port.to_string())
            .spawn()
            .unwrap(),
    );
    let nginx_bin = dir.join(options.comm);
    std::fs::copy(nginx, &nginx_bin).unwrap();
    let d = dir.display();
    let h2 = if options.http2 { " http2" } else { "" };
    let (host, extra) = (options.host, options.http_directives);
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1; pid {d}/nginx.pid; error_log {d}/logs/error.log; daemon off;\n\
             events {{}}\n\
             http {{ access_log off; {extra}\n\
               server {{ listen 127.0.0.1:{tls_port} ssl{h2}; server_name {host};\n\
                 ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;\n\
                 location / {{ proxy_pass http://127.0.0.1:{app_port}; proxy_http_version 1.1; proxy_set_header Host $host; }} }} }}\n"
        ),
    )
    .unwrap();
    let nginx = Guard(
        std::process::Command::new(&nginx_bin)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .spawn()
            .unwrap(),
    );
    wait_port(app_port);
    wait_port(tls_port);
    ShopServer {
        dir: dir.to_owned(),
        app_port,
        tls_port,
        _app: app,
        _nginx: nginx,
    }
}

/// A private CA (`ca.pem`), a server certificate for 127.0.0.1 and
/// localhost (`server.pem`, `server.key`) and a client certificate
/// (`client.pem`, `client.key`) it signed, as PEM files in `dir`: what the
/// TLS tests trust and present (webpki refuses a self-signed CA certificate
/// as a server's own). Keys are mode 0600. Panics when openssl fails.
pub fn test_ca(dir: &Path) -> [PathBuf; 5] {
    use std::os::unix::fs::PermissionsExt;
    let openssl = find_tool("openssl").expect("openssl");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=sessionwatch test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    // Version 3 certificates (webpki refuses v1 ones, even as the client's
    // own certificate), with the usual extensions.
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN=redis {who}"),
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
        ]);
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &*format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &*format!("{who}.pem"),
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend(["-extfile".into(), format!("{who}.ext")]);
        run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        std::fs::set_permissions(
            dir.join(format!("{who}.key")),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ]
    .map(|f| dir.join(f))
}

pub mod container;
