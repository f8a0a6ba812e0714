//! Talking to the running daemon over its admin socket.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    api::{Reply, Request},
    config::{self, Control},
};

/// A reload re-plans every service; give it time on large configurations.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The socket to use: `--socket`, else the one `--config` names, else the default.
pub fn socket_path(socket: Option<&Path>, config_path: &Path) -> PathBuf {
    if let Some(s) = socket {
        return s.to_path_buf();
    }
    match config::load(config_path) {
        Ok(loaded) => loaded.config.control.socket,
        Err(_) => Control::default().socket,
    }
}

pub fn call(socket: &Path, request: &Request) -> Result<Reply> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the daemon at {} (is `balancer run` running? as root?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .context("reading the daemon's reply")?;
    if text.trim().is_empty() {
        bail!("the daemon closed the connection without a reply");
    }
    serde_json::from_str(text.trim()).context("the daemon's reply is not understood")
}
