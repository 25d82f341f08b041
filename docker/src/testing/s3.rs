//! A real S3 server for tests: `s3s-fs` (the `s3s` project's file-system backend) in process on
//! 127.0.0.1, with SigV4 verification on. It checks header and presigned signatures, every header
//! named in `X-Amz-SignedHeaders` and `X-Amz-Expires`: a wrongly signed request gets a 403, as
//! from AWS or Minio. Stopping it (dropping it) closes the port and every open connection, for
//! tests of an unreachable cache.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The keys the server accepts.
pub const ACCESS_KEY: &str = "drover-test-access-key";
pub const SECRET_KEY: &str = "drover-test-secret-key";

/// A running server with one bucket; stopped when dropped.
pub struct S3Server {
    addr: SocketAddr,
    bucket: String,
    root: tempfile::TempDir,
    task: JoinHandle<()>,
}

impl S3Server {
    /// Starts a server with an empty `bucket` on a free loopback port. Must be called within a
    /// tokio runtime.
    pub async fn start(bucket: &str) -> std::io::Result<S3Server> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join(bucket))?;
        let fs = s3s_fs::FileSystem::new(root.path())
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it drops the connections too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(S3Server {
            addr,
            bucket: bucket.to_string(),
            root,
            task,
        })
    }

    /// `127.0.0.1:<port>`: a `ServerAddress`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The names of the bucket's objects, sorted.
    pub fn objects(&self) -> Vec<String> {
        let dir = self.root.path().join(&self.bucket);
        let mut out = Vec::new();
        walk(&dir, &dir, &mut out);
        out.sort();
        out
    }

    /// The file holding `object`'s bytes.
    pub fn object_path(&self, object: &str) -> PathBuf {
        self.root.path().join(&self.bucket).join(object)
    }

    /// Stops the server: its port refuses connections from now on.
    pub async fn stop(mut self) {
        self.task.abort();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(base, &path, out);
        } else if let Ok(relative) = path.strip_prefix(base) {
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}
