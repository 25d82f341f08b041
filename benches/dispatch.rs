//! Warm dispatch, end to end: how long a job enqueued in GitLab takes to reach its script on a warm
//! machine. The real daemon (`drover run`, built by `cargo bench` with the release profile, or any
//! binary given with `--drover`), the Docker provider's sandboxes on the local engine, and the fake
//! GitLab long-polling as Workhorse does (50 s holds).
//!
//! Jobs are enqueued one at a time: each after the previous one finished and a random gap, so a
//! warm sandbox is always free. Per job, on one clock (the host's): enqueue → assigned (the fake
//! hands the job to a request), assigned → first script byte (the script's first command reads
//! the wall clock, to the microsecond, inside the container), and the total.
//!
//! ```text
//! cargo bench --bench dispatch                               # this tree's drover, 200 jobs
//! cargo bench --bench dispatch -- --drover PATH --jobs 300   # another build, more jobs
//! ```
//!
//! Options: `--drover PATH`, `--jobs N` (200), `--seed N` (1), `--gap-ms MIN-MAX` (100-1000),
//! `--check-interval S` (3), `--idle N` (IdleCount, 2), `--runners N` (1), `--runner-extra FILE`
//! (lines appended to each runner's section, e.g. a warm-sandbox option), `--json FILE` (every
//! sample).
//!
//! `--at-rest SECONDS` measures the daemon at rest instead: once every runner's IdleCount
//! sandboxes are up and each runner holds a long poll, drover's resident memory and its CPU time
//! over SECONDS with no job to run (`/proc/<pid>`).
//!
//! ```text
//! cargo bench --bench dispatch -- --at-rest 60 --runners 4 --idle 5
//! ```

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover_docker::testing::{BUSYBOX_IMAGE, engine_for_tests};
use drover_gitlab::fake::{FakeGitlab, FakeOptions, JobStatus, JobTemplate};
use rand::{Rng, SeedableRng};
use tokio::process::Command;

/// How long any one wait may last before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(180);
/// Jobs run first and not counted: the image's first use, the pool settling.
const WARM_UP: usize = 3;

struct Args {
    drover: PathBuf,
    jobs: usize,
    seed: u64,
    gap_ms: (u64, u64),
    check_interval: u64,
    idle: u32,
    runners: u32,
    at_rest: Option<u64>,
    runner_extra: Option<PathBuf>,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        drover: PathBuf::from(env!("CARGO_BIN_EXE_drover")),
        jobs: 200,
        seed: 1,
        gap_ms: (100, 1000),
        check_interval: 3,
        idle: 2,
        runners: 1,
        at_rest: None,
        runner_extra: None,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| v.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        match arg.as_str() {
            "--drover" => args.drover = value("--drover")?.into(),
            "--jobs" => args.jobs = number("--jobs", value("--jobs")?)? as usize,
            "--seed" => args.seed = number("--seed", value("--seed")?)?,
            "--check-interval" => {
                args.check_interval = number("--check-interval", value("--check-interval")?)?
            }
            "--idle" => args.idle = number("--idle", value("--idle")?)? as u32,
            "--runners" => args.runners = number("--runners", value("--runners")?)?.max(1) as u32,
            "--at-rest" => args.at_rest = Some(number("--at-rest", value("--at-rest")?)?),
            "--gap-ms" => {
                let v = value("--gap-ms")?;
                let (lo, hi) = v.split_once('-').ok_or("--gap-ms MIN-MAX")?;
                args.gap_ms = (
                    number("--gap-ms", lo.into())?,
                    number("--gap-ms", hi.into())?,
                );
                if args.gap_ms.0 > args.gap_ms.1 {
                    return Err("--gap-ms: MIN above MAX".into());
                }
            }
            "--runner-extra" => args.runner_extra = Some(value("--runner-extra")?.into()),
            "--json" => args.json = Some(value("--json")?.into()),
            // What `cargo bench` passes to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.jobs == 0 {
        return Err("--jobs must be at least 1".into());
    }
    Ok(args)
}

/// Picks one figure of a [`Sample`].
type Figure = fn(&Sample) -> f64;

/// One job's timings, in milliseconds.
#[derive(Clone, Copy)]
struct Sample {
    assigned: f64,
    to_script: f64,
    total: f64,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("dispatch bench: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(&args)) {
        Ok(Measured::Jobs(samples)) => {
            report(&args, &samples);
            ExitCode::SUCCESS
        }
        Ok(Measured::AtRest(rest)) => {
            rest.report(&args);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("dispatch bench failed: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What a run measured.
enum Measured {
    Jobs(Vec<Sample>),
    AtRest(AtRest),
}

async fn run(args: &Args) -> Result<Measured, String> {
    let Some(docker) = engine_for_tests().await else {
        return Err("no Docker engine".into());
    };
    let fake = FakeGitlab::start(FakeOptions {
        long_poll: Duration::from_secs(50),
        trace_update_interval: 1,
        ..FakeOptions::default()
    })
    .await
    .map_err(|e| format!("starting the fake GitLab: {e}"))?;
    let tokens: Vec<String> = (0..args.runners)
        .map(|_| fake.create_runner_token())
        .collect();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = dir.path().join("config.toml");
    let extra = match &args.runner_extra {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => String::new(),
    };
    std::fs::write(&config, config_text(args, fake.url(), &tokens, &extra))
        .map_err(|e| e.to_string())?;
    let log = dir.path().join("drover.log");
    let mut daemon = Command::new(&args.drover)
        .arg("run")
        .arg("-c")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "warn")
        .env_remove("CONFIG_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", args.drover.display()))?;
    let pid = daemon.id().ok_or("drover exited at once")?;
    let result = match args.at_rest {
        Some(seconds) => at_rest(args, &fake, &docker, pid, Duration::from_secs(seconds))
            .await
            .map(Measured::AtRest),
        None => measure(args, &fake).await.map(Measured::Jobs),
    };
    // A graceful stop drains the sandboxes (shutdown_drain), so nothing is left on the engine.
    let _ = std::process::Command::new("kill")
        .args(["-QUIT", &pid.to_string()])
        .status();
    if tokio::time::timeout(PATIENCE, daemon.wait()).await.is_err() {
        eprintln!("drover did not stop; its log: {}", log.display());
        let _ = daemon.kill().await;
    }
    if result.is_err() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        eprintln!("drover's log:\n{text}");
    }
    result
}

fn config_text(args: &Args, url: &str, tokens: &[String], extra: &str) -> String {
    let limit = args.idle.max(1) + 2;
    let mut text = format!(
        "concurrent = {concurrent}\n\
         check_interval = {check}\n\
         shutdown_timeout = 60\n\
         listen_address = \"127.0.0.1:0\"\n\
         \n\
         [machine.shutdown_drain]\n  enabled = true\n",
        concurrent = limit * tokens.len() as u32,
        check = args.check_interval,
    );
    for (i, token) in tokens.iter().enumerate() {
        // The first runner keeps the names of earlier runs of the bench.
        let (name, machine) = match i {
            0 => ("dispatch-bench".to_string(), "dispatch".to_string()),
            _ => (format!("dispatch-bench-{i}"), format!("dispatch{i}")),
        };
        text.push_str(&format!(
            "\n\
             [[runners]]\n\
             \x20 name = \"{name}\"\n\
             \x20 url = \"{url}\"\n\
             \x20 token = \"{token}\"\n\
             \x20 executor = \"docker+machine\"\n\
             \x20 limit = {limit}\n\
             \x20 [runners.docker]\n\
             \x20   image = \"{BUSYBOX_IMAGE}\"\n\
             \x20   pull_policy = [\"if-not-present\"]\n\
             \x20 [runners.machine]\n\
             \x20   Provider = \"docker\"\n\
             \x20   IdleCount = {idle}\n\
             \x20   IdleTime = 600\n\
             \x20   MaxBuilds = 0\n\
             \x20   MachineName = \"{machine}-%s\"\n\
             {extra}",
            idle = args.idle.max(1),
        ));
    }
    text
}

/// The daemon at rest: its pool up, nothing to run.
struct AtRest {
    sandboxes: usize,
    window: Duration,
    cpu: Duration,
    rss_kib: u64,
    peak_kib: u64,
}

impl AtRest {
    fn report(&self, args: &Args) {
        println!(
            "at rest: {} runners, IdleCount {} each: {} sandboxes up, long polls held, no jobs",
            args.runners,
            args.idle.max(1),
            self.sandboxes
        );
        println!("drover: {}", args.drover.display());
        println!(
            "resident memory {:.1} MiB (peak {:.1} MiB); CPU {:.3} s in {} s = {:.2} %",
            self.rss_kib as f64 / 1024.0,
            self.peak_kib as f64 / 1024.0,
            self.cpu.as_secs_f64(),
            self.window.as_secs(),
            100.0 * self.cpu.as_secs_f64() / self.window.as_secs_f64()
        );
    }
}

/// Waits for every runner's pool and held request, lets the daemon settle, then reads its memory
/// and CPU time over `window`.
async fn at_rest(
    args: &Args,
    fake: &FakeGitlab,
    docker: &bollard::Docker,
    pid: u32,
    window: Duration,
) -> Result<AtRest, String> {
    let wanted = (args.runners * args.idle.max(1)) as usize;
    let deadline = Instant::now() + PATIENCE;
    let mut sandboxes = 0;
    while sandboxes < wanted || fake.held_requests() < args.runners as usize {
        if Instant::now() > deadline {
            return Err(format!(
                "{sandboxes} of {wanted} sandboxes and {} of {} held requests after {PATIENCE:?}",
                fake.held_requests(),
                args.runners
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        sandboxes = bench_sandboxes(docker).await?;
    }
    // What starting up left (a sweep, the first status file) is done within a few seconds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = cpu_time(pid)?;
    tokio::time::sleep(window).await;
    let cpu = cpu_time(pid)?.saturating_sub(before);
    let (rss_kib, peak_kib) = memory_kib(pid)?;
    Ok(AtRest {
        sandboxes: bench_sandboxes(docker).await?,
        window,
        cpu,
        rss_kib,
        peak_kib,
    })
}

/// The bench's sandboxes on the engine: their anchor containers (created, never started), named
/// after this bench's `MachineName`s.
async fn bench_sandboxes(docker: &bollard::Docker) -> Result<usize, String> {
    use drover_docker::labels;
    let options = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!("{}={}", labels::ROLE, labels::ROLE_ANCHOR)],
        )])),
        ..Default::default()
    };
    let found = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("listing the sandboxes: {e}"))?;
    let ours = |c: &bollard::models::ContainerSummary| {
        c.names.iter().flatten().any(|n| n.contains("dispatch"))
    };
    Ok(found.iter().filter(|c| ours(c)).count())
}

/// User + system CPU time of a process (`/proc/<pid>/stat`, in `USER_HZ` ticks: 1/100 s on
/// Linux whatever the kernel's own tick).
fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("odd /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or("odd /proc stat")
    };
    // utime and stime, fields 14 and 15 of the line (the state, field 3, is first here).
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Resident and peak resident memory of a process, in KiB (`/proc/<pid>/status`).
fn memory_kib(pid: u32) -> Result<(u64, u64), String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or(format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

async fn measure(args: &Args, fake: &FakeGitlab) -> Result<Vec<Sample>, String> {
    // The pool is warm once drover keeps a request outstanding (it asks only with a free machine).
    if !fake.wait_until(PATIENCE, |f| f.held_requests() > 0).await {
        return Err("drover never asked for a job".into());
    }
    // Maps the fake's clock (monotonic) onto the wall clock the scripts read.
    let (mono, wall) = (Instant::now(), SystemTime::now());
    let to_wall_ms = |t: Instant| {
        let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let offset = t.saturating_duration_since(mono).as_secs_f64()
            - mono.saturating_duration_since(t).as_secs_f64();
        since.as_secs_f64() * 1000.0 + offset * 1000.0
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut samples = Vec::with_capacity(args.jobs);
    for i in 0..WARM_UP + args.jobs {
        let gap = rng.random_range(args.gap_ms.0..=args.gap_ms.1);
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let id = fake.enqueue_job(
            JobTemplate::new(&format!("dispatch-{i}"))
                .image(BUSYBOX_IMAGE)
                .variable("GIT_STRATEGY", "none")
                .script(["adjtimex"]),
        );
        let finished = fake
            .wait_until(PATIENCE, |f| {
                f.job(id).is_some_and(|j| j.status.is_finished())
            })
            .await;
        let job = fake.job(id).ok_or("the fake lost a job")?;
        let trace = String::from_utf8_lossy(&job.trace).into_owned();
        if !finished || job.status != JobStatus::Success {
            return Err(format!(
                "job {id} did not succeed ({:?}):\n{trace}",
                job.status
            ));
        }
        let picked = job.picked_at.ok_or("a finished job was never picked")?;
        let script_ms = script_start_ms(&trace).ok_or_else(|| {
            format!("job {id}: no time.tv_sec/time.tv_usec in its trace:\n{trace}")
        })?;
        let enqueued_ms = to_wall_ms(job.enqueued_at.into_std());
        let picked_ms = to_wall_ms(picked.into_std());
        if i >= WARM_UP {
            samples.push(Sample {
                assigned: picked_ms - enqueued_ms,
                to_script: script_ms - picked_ms,
                total: script_ms - enqueued_ms,
            });
        }
    }
    Ok(samples)
}

/// The wall-clock time busybox's `adjtimex` printed, in milliseconds since the epoch.
fn script_start_ms(trace: &str) -> Option<f64> {
    let field = |name: &str| {
        trace.lines().find_map(|l| {
            let rest = l.trim().strip_prefix(name)?;
            rest.trim_start_matches(':').trim().parse::<u64>().ok()
        })
    };
    let (sec, usec) = (field("time.tv_sec")?, field("time.tv_usec")?);
    Some(sec as f64 * 1000.0 + usec as f64 / 1000.0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(args: &Args, samples: &[Sample]) {
    println!(
        "dispatch: {} jobs one at a time, gaps {}-{} ms, check_interval {} s, IdleCount {}, seed {}",
        samples.len(),
        args.gap_ms.0,
        args.gap_ms.1,
        args.check_interval,
        args.idle.max(1),
        args.seed
    );
    println!("drover: {}", args.drover.display());
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "ms", "p50", "p95", "p99", "mean", "max"
    );
    let rows: [(&str, Figure); 3] = [
        ("enqueue -> assigned", |s| s.assigned),
        ("assigned -> script", |s| s.to_script),
        ("total", |s| s.total),
    ];
    for (name, pick) in rows {
        let mut v: Vec<f64> = samples.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "{name:<24} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            percentile(&v, 50.0),
            percentile(&v, 95.0),
            percentile(&v, 99.0),
            mean,
            v[v.len() - 1]
        );
    }
    if let Some(path) = &args.json {
        let rows: Vec<_> = samples
            .iter()
            .map(|s| {
                serde_json::json!({
                    "enqueue_to_assigned_ms": s.assigned,
                    "assigned_to_script_ms": s.to_script,
                    "total_ms": s.total,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&rows).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("writing {}: {e}", path.display());
        }
    }
}
