//! A real image registry for tests: Debian's `docker-registry` (the CNCF Distribution registry),
//! started on loopback with its storage in a temporary directory, optionally behind htpasswd
//! (bcrypt, made by `htpasswd` from `apache2-utils`). The Docker engine accepts plain HTTP from
//! registries on 127.0.0.0/8, so images are pushed to it and pulled from it as from any registry.
//!
//! With `CI` set, a missing `docker-registry` or `htpasswd` fails the test; elsewhere
//! [`TestRegistry::start`] says so on stderr and returns `None`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, RemoveImageOptions, TagImageOptions};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The registry program of Debian's `docker-registry` package.
pub const REGISTRY_PROGRAM: &str = "docker-registry";

/// A user and password the registry demands (htpasswd auth).
#[derive(Clone)]
pub struct Basic {
    pub username: String,
    pub password: String,
}

/// A running registry; stopped (its process killed, its storage removed) when dropped.
pub struct TestRegistry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    auth: Option<Basic>,
}

impl TestRegistry {
    /// Starts a registry on a free loopback port and waits until it answers. `auth`: the only
    /// user it lets in. `None` without the programs when `CI` is not set (see the module doc).
    pub async fn start(auth: Option<Basic>) -> Option<TestRegistry> {
        for program in [Some(REGISTRY_PROGRAM), auth.as_ref().map(|_| "htpasswd")]
            .into_iter()
            .flatten()
        {
            if !installed(program) {
                let package = match program {
                    REGISTRY_PROGRAM => "docker-registry",
                    _ => "apache2-utils",
                };
                let message = format!(
                    "`{program}` is not installed (apt-get install {package}); the registry tests need it"
                );
                if std::env::var_os("CI").is_some() {
                    panic!("{message}, and CI is set");
                }
                eprintln!("SKIPPED: {message}; CI would fail here");
                return None;
            }
        }
        let dir = tempfile::tempdir().expect("a temporary directory for the registry");
        if let Some(auth) = &auth {
            write_htpasswd(dir.path(), auth);
        }
        let mut registry = TestRegistry {
            child: None,
            dir,
            port: 0,
            auth,
        };
        // A port picked by the kernel is free now but may be taken before the registry binds it:
        // then try another one.
        let mut failures = Vec::new();
        for _ in 0..5 {
            registry.port = free_port();
            registry.spawn();
            match registry.wait_until_ready().await {
                Ok(()) => return Some(registry),
                Err(log) => {
                    registry.stop();
                    failures.push(log);
                }
            }
        }
        panic!("the test registry did not start: {failures:?}");
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join(format!("config-{}.yml", self.port))
    }

    fn spawn(&mut self) {
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{}\n",
            self.dir.path().join("data").display(),
            self.port
        );
        if self.auth.is_some() {
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: drover-test\n    path: {}\n",
                self.dir.path().join("htpasswd").display()
            ));
        }
        std::fs::write(self.config_path(), config).expect("writing the registry's config");
        let log = std::fs::File::create(self.log_path()).expect("the registry's log file");
        let child = Command::new(REGISTRY_PROGRAM)
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the registry's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {REGISTRY_PROGRAM}: {e}"));
        self.child = Some(child);
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join(format!("registry-{}.log", self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Polls `GET /v2/` until the registry answers (401 counts: it is up). `Err(log)` if the
    /// process died or did not answer within 30 s.
    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("it exited ({status}): {}", self.log()));
            }
            if let Ok(status) = self.status("/v2/").await
                && (status == 200 || status == 401)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("no answer within 30 s: {}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The HTTP status of an unauthenticated `GET path`.
    async fn status(&self, path: &str) -> std::io::Result<u16> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.host());
        stream.write_all(request.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        let line = String::from_utf8_lossy(&head[..n]).into_owned();
        line.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not HTTP: {line:?}")))
    }

    /// `127.0.0.1:<port>`: the registry part of image names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`, as a mirror is written in `engine-registry-mirror=`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Pushes the engine's `local` image as `<host>/<repository>:<tag>` and drops that local
    /// name again, so that afterwards the image is on the engine only under `local`.
    pub async fn push(&self, docker: &Docker, local: &str, repository: &str, tag: &str) {
        let remote = format!("{}/{repository}", self.host());
        let options = TagImageOptions {
            repo: Some(remote.clone()),
            tag: Some(tag.to_string()),
        };
        docker
            .tag_image(local, Some(options))
            .await
            .unwrap_or_else(|e| panic!("tagging {local} as {remote}:{tag}: {e}"));
        let credentials = self.auth.as_ref().map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(self.host()),
            ..Default::default()
        });
        let options = PushImageOptions {
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let mut progress = docker.push_image(&remote, Some(options), credentials);
        let mut failure = None;
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) if info.error.is_some() => failure = info.error,
                Ok(_) => {}
                Err(e) => failure = Some(e.to_string()),
            }
        }
        let untag = RemoveImageOptions {
            noprune: true,
            ..Default::default()
        };
        let _ = docker
            .remove_image(&format!("{remote}:{tag}"), Some(untag), None)
            .await;
        if let Some(failure) = failure {
            panic!("pushing {local} to {remote}:{tag}: {failure}");
        }
    }

    /// Stops the registry (a mirror that is down); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn installed(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .any(|dir| dir.join(program).is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `htpasswd -Bbn`: a bcrypt entry, the only kind the registry reads.
fn write_htpasswd(dir: &Path, auth: &Basic) {
    let out = Command::new("htpasswd")
        .args(["-B", "-b", "-n", &auth.username, &auth.password])
        .output()
        .expect("running htpasswd");
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("htpasswd"), &out.stdout).expect("writing the htpasswd file");
}
