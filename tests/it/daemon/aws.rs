//! `executor = "docker-autoscaler"` on an AWS Auto Scaling group, end to end: moto as the AWS API,
//! the test bed's reconciler turning each InService instance into an SSH server (dropbear) on
//! exactly its private address 127.0.1.x with the host's engine behind it, the fake GitLab, and the
//! real drover binary reaching every instance's Docker over SSH.
//!
//! The fake instances share one range of loopback addresses, so these tests take turns. With `CI`
//! set a missing engine, moto or dropbear fails them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use bollard::query_parameters::LogsOptions;
use drover_docker::ssh::keys;
use drover_docker::testing::aws::{Background, Moto, Reconciler, TestGroup};
use drover_docker::testing::sshd::{self, INSTANCE_SSH_PORT, INSTANCE_USER};
use drover_gitlab::fake::{JobStatus, JobView};
use futures_util::StreamExt;
use tokio::sync::{Mutex, MutexGuard};

use super::harness::*;

/// How long a group may take to reach a size.
const SCALING: std::time::Duration = std::time::Duration::from_secs(180);

/// One AWS test bed at a time.
static TURN: Mutex<()> = Mutex::const_new(());

/// The AWS side of one test: moto, the group, the reconciler running in the background.
struct Cloud {
    group: TestGroup,
    reconciler: Arc<Reconciler>,
    reconciling: Option<Background>,
    /// The key every instance lets in (`key_path`, `use_static_credentials`).
    key_path: PathBuf,
    moto: Moto,
    _keys: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

/// What the test's `[runners.autoscaler]` says.
struct Asg {
    capacity: u32,
    max_instances: u32,
    idle_count: u32,
    idle_time: &'static str,
    delete_on_shutdown: bool,
    /// A host directory the jobs see as `/signal` (the fake instances run them on the host's
    /// engine): the test lets a waiting job go on by making a file there.
    signal: Option<PathBuf>,
}

impl Cloud {
    /// Moto, a group of at most `max_size` instances in the subnet `127.0.<subnet>.0/24` (one
    /// per test), the reconciler; `None` without moto outside CI.
    async fn start(env: &Env, max_size: u32, subnet: u8) -> Option<Cloud> {
        let turn = TURN.lock().await;
        let moto = Moto::start().await?;
        sshd::ensure_sshd_image(&env.docker)
            .await
            .unwrap_or_else(|e| panic!("the SSH server image: {e}"));
        let cidr = format!("127.0.{subnet}.0/24");
        let group = TestGroup::setup_in(&moto, &format!("e2e-{}", env.name), max_size, &cidr)
            .expect("setting up the group");
        let keys_dir = tempfile::tempdir().expect("a temp dir");
        let key = keys::manager_key(keys_dir.path()).expect("an ed25519 key");
        let reconciler = Arc::new(Reconciler {
            docker: env.docker.clone(),
            group: group.clone(),
            authorized_key: keys::authorized_key(&key),
        });
        // Fake instances of an earlier run that failed before its clean-up.
        reconciler
            .remove_all()
            .await
            .expect("removing stale instances");
        let reconciling = Some(reconciler.run_in_background());
        Some(Cloud {
            group,
            reconciler,
            reconciling,
            key_path: keys_dir.path().join(keys::MANAGER_KEY_FILE),
            moto,
            _keys: keys_dir,
            _turn: turn,
        })
    }

    /// The daemon's AWS settings: moto, fixed keys, no profile files, no instance metadata.
    fn environment(&self, env: &Env) -> Vec<(String, String)> {
        let none = env.state_dir().with_extension("no-aws-files");
        [
            ("AWS_ENDPOINT_URL", self.moto.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", none.join("config").display().to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                none.join("credentials").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Writes the test's `config.toml`: one docker-autoscaler runner on this group.
    fn configure(&self, env: &mut Env, asg: &Asg) {
        env.settings.env = self.environment(env);
        let concurrent = asg.capacity * asg.max_instances;
        let text = format!(
            "concurrent = {concurrent}\n\
             check_interval = 1\n\
             shutdown_timeout = 30\n\
             listen_address = \"127.0.0.1:0\"\n\
             \n\
             [[runners]]\n\
             \x20 name = \"{name}\"\n\
             \x20 url = \"{url}\"\n\
             \x20 token = \"{token}\"\n\
             \x20 executor = \"docker-autoscaler\"\n\
             \x20 limit = {concurrent}\n\
             \x20 [runners.docker]\n\
             \x20   image = \"{image}\"\n\
             \x20   pull_policy = [\"if-not-present\"]\n\
             {volumes}\
             \x20 [runners.autoscaler]\n\
             \x20   plugin = \"aws\"\n\
             \x20   capacity_per_instance = {capacity}\n\
             \x20   max_instances = {max_instances}\n\
             \x20   delete_instances_on_shutdown = {delete}\n\
             \x20   instance_ready_command = \"test -S /var/run/docker.sock\"\n\
             \x20   update_interval = \"1s\"\n\
             \x20   update_interval_when_expecting = \"1s\"\n\
             \x20   [runners.autoscaler.plugin_config]\n\
             \x20     name = \"{group}\"\n\
             \x20   [runners.autoscaler.connector_config]\n\
             \x20     username = \"{user}\"\n\
             \x20     protocol_port = {port}\n\
             \x20     use_static_credentials = true\n\
             \x20     key_path = \"{key}\"\n\
             \x20   [[runners.autoscaler.policy]]\n\
             \x20     idle_count = {idle_count}\n\
             \x20     idle_time = \"{idle_time}\"\n",
            name = env.name,
            url = env.fake.url(),
            token = env.token,
            image = env.settings.image,
            capacity = asg.capacity,
            max_instances = asg.max_instances,
            delete = asg.delete_on_shutdown,
            group = self.group.name,
            user = INSTANCE_USER,
            port = INSTANCE_SSH_PORT,
            key = self.key_path.display(),
            idle_count = asg.idle_count,
            idle_time = asg.idle_time,
            volumes = asg.signal.as_ref().map_or(String::new(), |dir| format!(
                "    volumes = [\"{}:/signal\"]\n",
                dir.display()
            )),
        );
        std::fs::write(env.config_path(), text).expect("writing config.toml");
    }

    /// The group's instances that are in service (moto's view), by id.
    fn in_service(&self) -> BTreeSet<String> {
        self.group
            .instances()
            .expect("describing the group")
            .into_iter()
            .filter(|i| i.lifecycle == "InService")
            .map(|i| i.id)
            .collect()
    }

    /// Waits until exactly `n` instances are in service and the group wants no more; their ids.
    async fn instances_become(&self, n: usize) -> BTreeSet<String> {
        // Scaling takes the core's idle time, the API emulator and the reconciler in turn: slow
        // on a loaded CI machine, so more patience than one daemon round trip.
        eventually_within(&format!("{n} instances in service"), SCALING, async || {
            let ids = self.in_service();
            let desired = self.group.info().ok()?.desired as usize;
            (ids.len() == n && desired == n).then_some(ids)
        })
        .await
    }

    /// The SSH server's log of an instance: who signed in.
    async fn ssh_log(&self, env: &Env, id: &str) -> String {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut logs = env
            .docker
            .logs(&self.reconciler.container(id), Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&chunk.to_string());
        }
        text
    }

    /// The end of every test: no fake instance left behind, moto stopped.
    async fn finish(mut self) {
        drop(self.reconciling.take());
        self.reconciler
            .remove_all()
            .await
            .expect("removing the fake instances");
    }
}

/// Moto, a group of at most `max_size` instances in `127.0.<subnet>.0/24`, and drover running
/// with `asg`; `None` outside CI without an engine or moto.
async fn drover_on_a_group(
    name: &str,
    max_size: u32,
    subnet: u8,
    asg: &Asg,
) -> Option<(Env, Cloud)> {
    let mut env = Env::new(name, settings()).await?;
    let cloud = Cloud::start(&env, max_size, subnet).await?;
    cloud.configure(&mut env, asg);
    env.start().await;
    Some((env, cloud))
}

/// The end of a test whose runner deletes its instances on shutdown: the drained shutdown
/// empties the group, and nothing of its instances (nor of `jobs`) is left.
async fn shut_down(mut env: Env, cloud: Cloud, jobs: &[u64]) {
    env.quit().await;
    cloud.instances_become(0).await;
    instance_disks_gone(&env, jobs).await;
    env.finish().await;
    cloud.finish().await;
}

/// What a real instance takes with it when it is terminated, and a fake one (sharing the host's
/// engine) leaves: the builds volumes of its job slots (`<machine>-builds-<slot>`) and, for the
/// jobs in `jobs`, their containers, networks and volumes. Everything else of the test's runner
/// is still checked by `Env::finish`.
async fn instance_disks_gone(env: &Env, jobs: &[u64]) {
    let objects = env.objects().await;
    let machine_volume = |name: &str| {
        name.starts_with(&format!("{}asg-", env.prefix()))
            && name
                .rsplit_once("-builds-")
                .is_some_and(|(_, slot)| slot.parse::<u32>().is_ok())
    };
    let of_jobs = |name: &str| jobs.iter().any(|j| name.contains(&format!("-job-{j}")));
    for c in objects.containers.iter().filter(|n| of_jobs(n)) {
        let options = bollard::query_parameters::RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let _ = env.docker.remove_container(c, Some(options)).await;
    }
    for n in objects.networks.iter().filter(|n| of_jobs(n)) {
        let _ = env.docker.remove_network(n).await;
    }
    for v in objects
        .volumes
        .iter()
        .filter(|n| machine_volume(n) || of_jobs(n))
    {
        let options = bollard::query_parameters::RemoveVolumeOptions { force: true };
        env.docker
            .remove_volume(v, Some(options))
            .await
            .unwrap_or_else(|e| panic!("removing {v}: {e}"));
    }
}

/// Signed in over SSH with drover's key at least once.
fn signed_in(log: &str) -> bool {
    log.contains("Pubkey auth succeeded")
}

/// The machine a job ran on, from the first line of its trace.
fn machine_of(job: &JobView) -> String {
    let trace = text(job);
    let start = trace
        .find("on machine ")
        .unwrap_or_else(|| panic!("no machine in the trace:\n{trace}"))
        + "on machine ".len();
    trace[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// The settings of every test: the local test image, the daemon's env filled in by the cloud.
fn settings() -> Settings {
    Settings::pool()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_scales_the_group_from_zero_and_back_to_idle_count() {
    let asg = Asg {
        capacity: 1,
        max_instances: 3,
        idle_count: 0,
        idle_time: "2s",
        delete_on_shutdown: false,
        signal: None,
    };
    let Some((env, cloud)) = drover_on_a_group("aws_burst", 3, 21, &asg).await else {
        return;
    };
    assert!(cloud.in_service().is_empty(), "the group starts empty");

    let burst: Vec<u64> = (0..3)
        .map(|i| env.enqueue(job(&format!("burst-{i}"), &["echo started", "sleep 6"])))
        .collect();
    // Three jobs, one per instance: the group grows to three, and each runs its job at once.
    let grown = cloud.instances_become(3).await;
    for id in &burst {
        env.trace_shows(*id, "\nstarted").await;
    }
    let mut machines = BTreeSet::new();
    for id in &burst {
        let view = env.finished(*id).await;
        assert_final(&view, JobStatus::Success, None, None);
        machines.insert(machine_of(&view));
    }
    assert_eq!(machines.len(), 3, "one instance per job: {machines:?}");
    for id in &grown {
        let log = cloud.ssh_log(&env, id).await;
        assert!(signed_in(&log), "drover reached {id} over SSH:\n{log}");
    }
    // idle_count 0 and idle_time 2 s: the group goes back to nothing.
    cloud.instances_become(0).await;
    instance_disks_gone(&env, &[]).await;
    eventually("the status shows nothing in flight", async || {
        let status = env.status()?;
        let runner = &status["runners"][0];
        let settled = runner["idle"] == 0
            && runner["creating"] == 0
            && runner["removing"] == 0
            && runner["busy"] == 0;
        settled.then_some(())
    })
    .await;
    env.finish().await;
    cloud.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_per_instance_two_runs_two_jobs_on_one_instance_at_once() {
    let signal = tempfile::tempdir().expect("a temp dir");
    let asg = Asg {
        capacity: 2,
        max_instances: 1,
        idle_count: 0,
        idle_time: "1m",
        delete_on_shutdown: true,
        signal: Some(signal.path().to_path_buf()),
    };
    let Some((env, cloud)) = drover_on_a_group("aws_capacity", 2, 22, &asg).await else {
        return;
    };

    // Each job marks the builds directory as its own, says it started, waits until the other
    // started too (so both run at once, whatever the pace), and checks the mark is still its own:
    // two jobs sharing one working copy would see the other's. A job left alone fails.
    let script = [
        "echo \"$CI_JOB_ID\" > \"$CI_BUILDS_DIR/owner\"",
        "touch \"/signal/started-$CI_JOB_ID\"",
        "n=0; until [ \"$(ls /signal | grep -c '^started-')\" -ge 2 ]; do \
         n=$((n+1)); [ $n -lt 1800 ] || { echo alone; exit 3; }; sleep 0.1; done",
        "echo \"owner $(cat \"$CI_BUILDS_DIR/owner\") of $CI_JOB_ID\"",
    ];
    let a = env.enqueue(job("a", &script));
    let b = env.enqueue(job("b", &script));
    let instances = cloud.instances_become(1).await;
    let (a, b) = (env.finished(a).await, env.finished(b).await);
    for view in [&a, &b] {
        assert_final(view, JobStatus::Success, None, None);
        let own = format!("owner {} of {}", view.id, view.id);
        assert_eq!(
            lines(view, &own),
            1,
            "a working copy of its own:\n{}",
            text(view)
        );
    }
    assert_eq!(machine_of(&a), machine_of(&b), "one instance ran both");
    assert_eq!(cloud.in_service(), instances, "no other instance came");
    // delete_instances_on_shutdown: the drained shutdown empties the group.
    shut_down(env, cloud, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_finishes_the_job_once_and_keeps_the_idle_instances() {
    let signal = tempfile::tempdir().expect("a temp dir");
    let asg = Asg {
        capacity: 1,
        max_instances: 3,
        idle_count: 1,
        idle_time: "10m",
        delete_on_shutdown: true,
        signal: Some(signal.path().to_path_buf()),
    };
    let Some((mut env, cloud)) = drover_on_a_group("aws_kill9", 3, 23, &asg).await else {
        return;
    };
    // idle_count 1: one warm instance before any job.
    cloud.instances_become(1).await;
    // The job waits for the test's word, so drover dies mid-job whatever the pace.
    let id = env.enqueue(job(
        "survivor",
        &[
            "echo started",
            "until [ -e /signal/go ]; do sleep 0.1; done",
            "echo \"finished $((6 * 7))\"",
        ],
    ));
    env.trace_shows(id, "\nstarted").await;
    // The job took the warm instance and idle_count brings another: one busy, one idle.
    let before = cloud.instances_become(2).await;
    env.crash().await;
    assert!(!env.job(id).status.is_finished(), "the crash came mid-job");

    env.start().await;
    std::fs::write(signal.path().join("go"), "").expect("letting the job go on");
    let view = env.finished(id).await;
    assert_final(&view, JobStatus::Success, None, None);
    assert_eq!(lines(&view, "finished 42"), 1, "{}", text(&view));
    assert_eq!(count(&view.trace, "Job succeeded"), 1, "{}", text(&view));
    // The restart re-adopted both instances (none deleted, none made): the idle one stays.
    assert_eq!(
        cloud.in_service(),
        before,
        "the instances survived the restart"
    );
    eventually("one busy instance back to idle, both kept", async || {
        let status = env.status()?;
        let runner = &status["runners"][0];
        (runner["idle"] == 2 && runner["busy"] == 0 && runner["creating"] == 0).then_some(())
    })
    .await;
    assert_eq!(cloud.in_service(), before);
    // Nothing leaks: the drained shutdown deletes the instances (delete_instances_on_shutdown).
    shut_down(env, cloud, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_terminated_behind_drovers_back_fails_its_job_naming_it() {
    let asg = Asg {
        capacity: 1,
        max_instances: 2,
        idle_count: 0,
        idle_time: "10m",
        delete_on_shutdown: true,
        signal: None,
    };
    let Some((env, cloud)) = drover_on_a_group("aws_lost", 2, 24, &asg).await else {
        return;
    };
    let id = env.enqueue(job("doomed", &["echo started", "sleep 120"]));
    env.trace_shows(id, "\nstarted").await;
    let lost = cloud.instances_become(1).await;
    let lost = lost.first().expect("one instance").clone();
    // A spot reclaim, or someone in the console: terminated (desired decremented) behind
    // drover's back; the reconciler takes its SSH server away.
    cloud
        .group
        .terminate(&lost)
        .expect("terminating the instance");

    let view = env.finished(id).await;
    assert_eq!(view.status, JobStatus::Failed, "{}", text(&view));
    assert_eq!(
        view.failure_reason.as_deref(),
        Some("runner_system_failure"),
        "{}",
        text(&view)
    );
    assert!(
        text(&view).contains(&lost),
        "the trace names the lost instance {lost}:\n{}",
        text(&view)
    );

    // Capacity is restored: the next job gets a new instance and runs.
    let next = env.enqueue(job("next", &["echo \"again $((6 * 7))\""]));
    let next = env.finished(next).await;
    assert_final(&next, JobStatus::Success, None, None);
    assert_eq!(lines(&next, "again 42"), 1, "{}", text(&next));
    let now = cloud.in_service();
    assert!(!now.contains(&lost), "{now:?}");
    shut_down(env, cloud, &[id]).await;
}

/// A job whose instance's SSH server drops every session mid-step (sshd restarted, as on a
/// network blip) runs on: drover reaches the engine again over a fresh session, and when the job
/// outlives its timeout stops it, reports `job_execution_timeout` and removes its containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_job_is_cleaned_up_over_a_fresh_session_after_its_session_dropped() {
    let asg = Asg {
        capacity: 1,
        max_instances: 1,
        idle_count: 0,
        idle_time: "10m",
        delete_on_shutdown: true,
        signal: None,
    };
    let Some((env, cloud)) = drover_on_a_group("aws_timeout", 1, 25, &asg).await else {
        return;
    };
    let id = env.enqueue(job("slow", &["echo started", "sleep 600"]).timeout(30));
    env.trace_shows(id, "\nstarted").await;
    let instance = cloud.instances_become(1).await;
    let instance = instance.first().expect("one instance");
    let address = cloud
        .group
        .instances()
        .expect("describing the group")
        .into_iter()
        .find(|i| &i.id == instance)
        .and_then(|i| i.private_ip)
        .map(|ip| format!("{ip}:{INSTANCE_SSH_PORT}"))
        .expect("the instance's address");
    sshd::restart_instance(&env.docker, &cloud.reconciler.container(instance), &address)
        .await
        .expect("restarting the instance's SSH server");

    let view = env.finished(id).await;
    assert_final(
        &view,
        JobStatus::Failed,
        Some("job_execution_timeout"),
        None,
    );
    assert_eq!(lines(&view, "started"), 1, "{}", text(&view));
    let of_job = format!("-job-{id}");
    eventually("the timed-out job's containers are removed", async || {
        let left = env.objects().await.containers;
        left.iter().all(|c| !c.contains(&of_job)).then_some(())
    })
    .await;
    shut_down(env, cloud, &[]).await;
}
