//! One SSH session per instance, shared by all its jobs, dialled again when it drops.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use russh::client::{self, Handle, Msg};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelStream, Disconnect};
use tokio::sync::Mutex;

/// Output kept per stream of [`SshConnection::exec`]: the tail matters for a message.
const EXEC_OUTPUT_LIMIT: usize = 16 * 1024;

/// Runs right before every dial (not before channels on a live session): where a provider pushes
/// a short-lived key, e.g. through EC2 Instance Connect. An `Err` is the dial's failure.
pub type BeforeDial = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What a command run by [`SshConnection::exec`] left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit status; `None` if the server sent none (killed by a signal).
    pub status: Option<u32>,
    /// The last [`EXEC_OUTPUT_LIMIT`] bytes of stdout and of stderr.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Channels tried per request before giving up (a dead session is dialled again in between).
/// Several jobs starting at once on one instance open channels in bursts, and dropbear then
/// closes more of them unconfirmed: room for a burst, each retry after a short pause.
const CHANNEL_ATTEMPTS: u32 = 6;

/// The pause before the next channel after one the server closed unconfirmed: 25 ms, 50 ms, …
async fn pause_before_retry(attempt: u32, error: &SshError) {
    if matches!(error, SshError::ExecNotStarted { .. }) {
        tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt + 1))).await;
    }
}

/// Where an instance's Docker engine is, seen from its SSH server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerTunnel {
    /// `direct-streamlocal@openssh.com` to the engine's unix socket (OpenSSH's sshd).
    Streamlocal(String),
    /// `docker system dial-stdio` run on the instance (GitLab Runner's default): works with any
    /// SSH server, needs the docker CLI there.
    DialStdio,
}

/// Which host keys an instance may present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// The first key seen is trusted and pinned for the life of this connection object: a
    /// redial must meet the same key. Instances are new machines nobody has a key for yet,
    /// as with GitLab's connector, which checks no host key at all.
    TrustFirstUse,
    /// Only this key.
    Exactly(PublicKey),
}

/// How to reach one instance.
#[derive(Clone)]
pub struct SshTarget {
    /// `host:port`, e.g. the instance's private address and 22.
    pub address: String,
    pub username: String,
    pub key: Arc<PrivateKey>,
    pub tunnel: DockerTunnel,
    pub host_key: HostKeyPolicy,
    /// Keepalive interval; `None`: none.
    pub keepalive: Option<Duration>,
    /// Bound on a dial (TCP, handshake, authentication).
    pub timeout: Duration,
}

impl std::fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTarget")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("tunnel", &self.tunnel)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("SSH to {address}: {reason}")]
    Dial { address: String, reason: String },
    #[error("SSH to {address}: timed out after {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("SSH to {address}: the server refused key authentication as {username:?}")]
    AuthRefused { address: String, username: String },
    #[error(
        "SSH to {address}: host key changed (was {expected}, now {found}); refusing to connect"
    )]
    HostKeyChanged {
        address: String,
        expected: String,
        found: String,
    },
    #[error("SSH to {address}: opening a channel to Docker: {reason}")]
    Channel { address: String, reason: String },
    #[error(
        "SSH to {address}: the command (`docker system dial-stdio` or a check) did not start (the server answered {reason})"
    )]
    ExecNotStarted { address: String, reason: String },
    #[error("SSH to {address}: before dialling: {reason}")]
    BeforeDial { address: String, reason: String },
}

/// A connection to one instance. Cheap to share (`Arc`); every request opens its own channel.
pub struct SshConnection {
    target: SshTarget,
    session: Mutex<Option<Arc<Handle<Client>>>>,
    /// The host key seen first (trust on first use), kept across redials.
    pinned: Arc<StdMutex<Option<PublicKey>>>,
    /// Sessions dialled so far, for tests and metrics.
    dials: std::sync::atomic::AtomicU32,
    before_dial: Option<BeforeDial>,
}

impl SshConnection {
    pub fn new(target: SshTarget) -> SshConnection {
        let pinned = match &target.host_key {
            HostKeyPolicy::Exactly(key) => Some(key.clone()),
            HostKeyPolicy::TrustFirstUse => None,
        };
        SshConnection {
            target,
            session: Mutex::new(None),
            pinned: Arc::new(StdMutex::new(pinned)),
            dials: Default::default(),
            before_dial: None,
        }
    }

    /// Runs `hook` right before each dial (see [`BeforeDial`]).
    pub fn with_before_dial(mut self, hook: BeforeDial) -> SshConnection {
        self.before_dial = Some(hook);
        self
    }

    /// Runs `command` on the instance (on the live session or a new one) and waits for it to end.
    /// A channel the server closes before confirming the exec is tried again, as for Docker's.
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, SshError> {
        let mut last = None;
        for attempt in 0..CHANNEL_ATTEMPTS {
            let session = self.session().await?;
            match self.exec_on(&session, command).await {
                Ok(out) => return Ok(out),
                Err(e) => {
                    if session.is_closed() || !matches!(e, SshError::ExecNotStarted { .. }) {
                        self.forget(&session).await;
                    }
                    pause_before_retry(attempt, &e).await;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| SshError::Channel {
            address: self.target.address.clone(),
            reason: "no session".into(),
        }))
    }

    async fn exec_on(
        &self,
        session: &Handle<Client>,
        command: &str,
    ) -> Result<ExecOutput, SshError> {
        let err = |e: russh::Error| SshError::Channel {
            address: self.target.address.clone(),
            reason: e.to_string(),
        };
        let mut channel = session.channel_open_session().await.map_err(err)?;
        channel.exec(true, command).await.map_err(err)?;
        let mut out = ExecOutput::default();
        let keep = |buf: &mut Vec<u8>, data: &[u8]| {
            buf.extend_from_slice(data);
            if buf.len() > EXEC_OUTPUT_LIMIT {
                buf.drain(..buf.len() - EXEC_OUTPUT_LIMIT);
            }
        };
        let mut started = false;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Success => started = true,
                ChannelMsg::Data { data } => {
                    started = true;
                    keep(&mut out.stdout, &data);
                }
                ChannelMsg::ExtendedData { data, .. } => {
                    started = true;
                    keep(&mut out.stderr, &data);
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    started = true;
                    out.status = Some(exit_status);
                }
                ChannelMsg::Failure if !started => {
                    return Err(SshError::ExecNotStarted {
                        address: self.target.address.clone(),
                        reason: "a refusal".into(),
                    });
                }
                _ => {}
            }
        }
        if !started {
            return Err(SshError::ExecNotStarted {
                address: self.target.address.clone(),
                reason: "a closed channel".into(),
            });
        }
        Ok(out)
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// How many SSH sessions were dialled (1 while the first one lives).
    pub fn dials(&self) -> u32 {
        self.dials.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The host key pinned so far.
    pub fn host_key(&self) -> Option<PublicKey> {
        self.pinned.lock().ok().and_then(|k| k.clone())
    }

    /// A byte stream to the instance's Docker engine, on the live session or a new one. When
    /// the live session turns out dead (the instance restarted, the network dropped it), it is
    /// dialled again once.
    pub async fn docker_stream(&self) -> Result<ChannelStream<Msg>, SshError> {
        let mut last = None;
        for attempt in 0..CHANNEL_ATTEMPTS {
            let session = self.session().await?;
            match self.open(&session).await {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    // A dead session is dialled again; a live one gets another channel.
                    if session.is_closed() || !matches!(e, SshError::ExecNotStarted { .. }) {
                        self.forget(&session).await;
                    }
                    pause_before_retry(attempt, &e).await;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| SshError::Channel {
            address: self.target.address.clone(),
            reason: "no session".into(),
        }))
    }

    /// Closes the session; the next request dials again.
    pub async fn close(&self) {
        if let Some(session) = self.session.lock().await.take() {
            let _ = session
                .disconnect(Disconnect::ByApplication, "", "en")
                .await;
        }
    }

    async fn open(&self, session: &Handle<Client>) -> Result<ChannelStream<Msg>, SshError> {
        let err = |e: russh::Error| SshError::Channel {
            address: self.target.address.clone(),
            reason: e.to_string(),
        };
        let channel = match &self.target.tunnel {
            DockerTunnel::Streamlocal(socket) => session
                .channel_open_direct_streamlocal(socket.as_str())
                .await
                .map_err(err)?,
            DockerTunnel::DialStdio => {
                let mut channel = session.channel_open_session().await.map_err(err)?;
                channel
                    .exec(true, "docker system dial-stdio")
                    .await
                    .map_err(err)?;
                // Only a confirmed exec carries Docker's bytes. Dropbear at times answers a
                // channel opened right after another one closed with EOF and close instead:
                // that channel is dropped and another one opened.
                loop {
                    match channel.wait().await {
                        Some(ChannelMsg::Success) => break,
                        Some(ChannelMsg::WindowAdjusted { .. }) => continue,
                        other => {
                            return Err(SshError::ExecNotStarted {
                                address: self.target.address.clone(),
                                reason: format!("{other:?}"),
                            });
                        }
                    }
                }
                channel
            }
        };
        Ok(channel.into_stream())
    }

    async fn session(&self) -> Result<Arc<Handle<Client>>, SshError> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref()
            && !session.is_closed()
        {
            return Ok(session.clone());
        }
        let timeout = self.target.timeout;
        let session = tokio::time::timeout(timeout, self.dial())
            .await
            .map_err(|_| SshError::Timeout {
                address: self.target.address.clone(),
                timeout,
            })??;
        let session = Arc::new(session);
        *slot = Some(session.clone());
        Ok(session)
    }

    async fn forget(&self, dead: &Arc<Handle<Client>>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, dead)) {
            *slot = None;
        }
    }

    async fn dial(&self) -> Result<Handle<Client>, SshError> {
        let t = &self.target;
        if let Some(hook) = &self.before_dial {
            hook().await.map_err(|reason| SshError::BeforeDial {
                address: t.address.clone(),
                reason,
            })?;
        }
        let config = Arc::new(client::Config {
            keepalive_interval: t.keepalive,
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        });
        let changed: Mismatch = Arc::default();
        let handler = Client {
            pinned: self.pinned.clone(),
            changed: changed.clone(),
        };
        self.dials
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut session = match client::connect(config, t.address.as_str(), handler).await {
            Ok(s) => s,
            Err(e) => {
                if let Some((expected, found)) = changed.lock().ok().and_then(|c| c.clone()) {
                    return Err(SshError::HostKeyChanged {
                        address: t.address.clone(),
                        expected,
                        found,
                    });
                }
                return Err(SshError::Dial {
                    address: t.address.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let auth = session
            .authenticate_publickey(
                t.username.as_str(),
                PrivateKeyWithHashAlg::new(t.key.clone(), None),
            )
            .await
            .map_err(|e| SshError::Dial {
                address: t.address.clone(),
                reason: e.to_string(),
            })?;
        if !auth.success() {
            return Err(SshError::AuthRefused {
                address: t.address.clone(),
                username: t.username.clone(),
            });
        }
        Ok(session)
    }
}

/// (expected, found) fingerprints, set when a pinned host key did not match.
type Mismatch = Arc<StdMutex<Option<(String, String)>>>;

/// russh's callbacks: the host-key check.
struct Client {
    pinned: Arc<StdMutex<Option<PublicKey>>>,
    changed: Mismatch,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server else {
            // Host certificates need a CA to check against, which instances do not come with.
            return Ok(false);
        };
        let Ok(mut pinned) = self.pinned.lock() else {
            return Ok(false);
        };
        match pinned.as_ref() {
            None => {
                *pinned = Some(key.clone());
                Ok(true)
            }
            Some(expected) if expected.key_data() == key.key_data() => Ok(true),
            Some(expected) => {
                let fp = |k: &PublicKey| k.fingerprint(Default::default()).to_string();
                if let Ok(mut c) = self.changed.lock() {
                    *c = Some((fp(expected), fp(key)));
                }
                Ok(false)
            }
        }
    }
}
