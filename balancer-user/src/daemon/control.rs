//! The admin socket: accepts connections from the CLI, reads one request,
//! hands it to the daemon's loop and writes back its reply. Only root (or the
//! daemon's own user) may talk to it; the socket file is mode 0600.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

use crate::api::{Reply, Request};

/// A request and where its reply goes.
pub type Call = (Request, oneshot::Sender<Reply>);

const MAX_REQUEST: u64 = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path`, refusing if another daemon answers there. Calls arrive on
    /// the returned channel.
    pub fn bind(path: &Path) -> Result<(Self, mpsc::Receiver<Call>)> {
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another balancer daemon is running: its admin socket {} answers (stop it first, or set control.socket)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding the admin socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept(listener, tx));
        Ok((
            Self {
                path: path.to_path_buf(),
            },
            rx,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept(listener: UnixListener, calls: mpsc::Sender<Call>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, calls.clone()));
            }
            Err(e) => {
                warn!("admin socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(mut stream: UnixStream, calls: mpsc::Sender<Call>) {
    let reply = match read_request(&mut stream).await {
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            if calls.send((request, tx)).await.is_err() {
                return;
            }
            match rx.await {
                Ok(reply) => reply,
                Err(_) => Reply::refused("the daemon is stopping", Vec::new()),
            }
        }
        Err(e) => Reply::refused(format!("bad request: {e:#}"), Vec::new()),
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_else(|e| {
        format!("{{\"ok\":false,\"message\":\"cannot encode the reply: {e}\"}}")
    });
    text.push('\n');
    if let Err(e) = stream.write_all(text.as_bytes()).await {
        debug!("admin socket: writing the reply: {e}");
    }
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut UnixStream) -> Result<Request> {
    let cred = stream.peer_cred().context("peer credentials")?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if cred.uid() != 0 && cred.uid() != me {
        bail!("uid {} may not use the admin socket", cred.uid());
    }
    let mut buf = Vec::new();
    let read = async {
        let mut limited = (&mut *stream).take(MAX_REQUEST);
        // One request per connection, ended by a newline or the client's shutdown.
        let mut byte = [0u8; 1024];
        loop {
            let n = limited.read(&mut byte).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&byte[..n]);
            if buf.contains(&b'\n') {
                break;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .context("no request within 5 s")??;
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    serde_json::from_slice(line).context("not a request")
}
