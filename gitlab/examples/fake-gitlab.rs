//! Serves the fake GitLab for manual demos of `drover run`:
//!
//! ```text
//! cargo run -p drover-gitlab --example fake-gitlab -- --port 8929 --jobs 5
//! drover register -c demo.toml --non-interactive --url http://127.0.0.1:8929 \
//!     --token <the glrt- token printed> --executor docker --docker-image alpine:3.20
//! drover run -c demo.toml
//! ```
//!
//! Options: `--port N` (0: any), `--jobs N` simple jobs to enqueue (default 3), `--script CMD`
//! (default `echo hello from job $CI_JOB_ID`), `--long-poll SECONDS` (default 50), `--tls`.
//! Prints job state changes as they happen, and on Ctrl-C any protocol violations it saw.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use drover_gitlab::fake::{FakeGitlab, FakeOptions, JobTemplate};

struct Args {
    port: u16,
    jobs: u32,
    script: String,
    long_poll: u64,
    tls: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        jobs: 3,
        script: "echo hello from job $CI_JOB_ID".into(),
        long_poll: 50,
        tls: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => {
                args.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--jobs" => {
                args.jobs = value("--jobs")?
                    .parse()
                    .map_err(|e| format!("--jobs: {e}"))?
            }
            "--script" => args.script = value("--script")?,
            "--long-poll" => {
                args.long_poll = value("--long-poll")?
                    .parse()
                    .map_err(|e| format!("--long-poll: {e}"))?
            }
            "--tls" => args.tls = true,
            "-h" | "--help" => {
                return Err("usage: fake-gitlab [--port N] [--jobs N] [--script CMD] [--long-poll SECONDS] [--tls]".into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let options = FakeOptions {
        port: args.port,
        long_poll: Duration::from_secs(args.long_poll),
        tls: args.tls,
        ..FakeOptions::default()
    };
    let fake = match FakeGitlab::start(options).await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("cannot start the fake GitLab on port {}: {e}", args.port);
            return ExitCode::FAILURE;
        }
    };
    let token = fake.create_runner_token();
    for i in 1..=args.jobs {
        fake.enqueue_job(JobTemplate::new(&format!("demo-{i}")).script([args.script.clone()]));
    }
    println!("fake GitLab listening on {}", fake.url());
    println!("runner authentication token: {token}");
    println!("registration token:          {}", fake.registration_token());
    if let Some(pem) = fake.ca_pem() {
        let path = std::env::temp_dir().join("fake-gitlab-ca.pem");
        match std::fs::write(&path, pem) {
            Ok(()) => println!("CA certificate (tls-ca-file): {}", path.display()),
            Err(e) => eprintln!("cannot write the CA certificate to {}: {e}", path.display()),
        }
    }
    println!("{} job(s) queued; Ctrl-C to stop", args.jobs);

    let mut last: BTreeMap<u64, &'static str> = BTreeMap::new();
    let watch = async {
        loop {
            fake.wait_until(Duration::from_secs(3600), |f| {
                f.jobs()
                    .iter()
                    .any(|j| last.get(&j.id) != Some(&j.status.as_str()))
            })
            .await;
            for job in fake.jobs() {
                if last.insert(job.id, job.status.as_str()) != Some(job.status.as_str()) {
                    println!(
                        "job {} {}: {} ({} trace bytes)",
                        job.id,
                        job.response.job_info.name,
                        job.status.as_str(),
                        job.trace.len()
                    );
                }
            }
        }
    };
    tokio::select! {
        () = watch => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let violations = fake.violations();
    if violations.is_empty() {
        println!("no protocol violations");
        ExitCode::SUCCESS
    } else {
        for v in &violations {
            println!("violation: {v}");
        }
        ExitCode::FAILURE
    }
}
