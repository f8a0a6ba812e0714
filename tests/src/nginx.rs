//! nginx in a namespace with a generated minimal configuration.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::{Netns, Process};
use crate::servers::tcp_connect;
use crate::util::{TempDir, tail, wait_until};

/// How long [`nginx`] waits for the server to accept connections.
pub const NGINX_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nginx; killed (whole process group) and its directory removed on drop.
#[derive(Debug)]
pub struct Nginx {
    // Field order is drop order: the process goes before its directory.
    process: Process,
    addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/` (IPv6 in brackets).
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The pid of the nginx master process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The directory holding `nginx.conf`, `error.log`, `access.log`, the pid file.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// The access log so far (one line per request).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// Starts nginx in `ns`, listening on `listen` and answering every path with
/// `200 "{body}\n"` (text/plain), with its configuration, pid file and logs in a temporary
/// directory. Returns once it accepts TCP connections (at most [`NGINX_START_TIMEOUT`]).
///
/// `body` must not contain `$` (nginx would read a variable) or a NUL byte.
pub fn nginx(ns: &Netns, listen: SocketAddr, body: &str) -> Result<Nginx> {
    if body.contains(['$', '\0']) {
        bail!("nginx body must not contain '$' or NUL: {body:?}");
    }
    let escaped = body.replace('\\', "\\\\").replace('"', "\\\"");
    let dir = TempDir::new("nginx")?;
    let d = dir.path().display().to_string();
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 5s;
    server {{
        listen {listen};
        server_name _;
        default_type text/plain;
        location / {{
            return 200 "{escaped}\n";
        }}
    }}
}}
"#
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
    let conf_s = conf_path.display().to_string();
    let err_s = format!("{d}/error.log");
    let mut process = ns
        .spawn("nginx", &["-p", &d, "-e", &err_s, "-c", &conf_s])
        .context("starting nginx (is it installed? apt-get install -y nginx)")?;
    // Until it accepts a connection or has exited, which is then reported.
    let mut exited = Ok(None);
    let accepting = wait_until(NGINX_START_TIMEOUT, || {
        exited = process.try_status();
        if !matches!(exited, Ok(None)) {
            return true;
        }
        tcp_connect(ns, listen, Duration::from_millis(200))
            .map(|c| c.close())
            .is_ok()
    });
    if let Some(status) = exited? {
        bail!(
            "nginx in {} exited at start ({status}):\n{}\nerror.log:\n{}",
            ns.name(),
            tail(&process.output_so_far(), 4096),
            tail(
                &std::fs::read_to_string(dir.join("error.log")).unwrap_or_default(),
                4096
            )
        );
    }
    if !accepting {
        bail!(
            "nginx in {} does not accept connections on {listen} after {:?}:\n{}",
            ns.name(),
            NGINX_START_TIMEOUT,
            tail(&process.output_so_far(), 4096)
        );
    }
    Ok(Nginx {
        process,
        addr: listen,
        dir,
    })
}
