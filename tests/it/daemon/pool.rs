//! The warm pool on the engine: IdleCount, MaxBuilds, IdleTime.

use drover_gitlab::fake::{JobStatus, JobView};

use super::harness::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_count_keeps_warm_sandboxes_and_max_builds_replaces_each_after_its_job() {
    let settings = Settings {
        idle_count: 2,
        max_builds: 1,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("pool_idle_count", settings).await else {
        return;
    };
    env.start().await;
    let warm = env.sandboxes_become(2).await;

    let first = env.enqueue(job("first", &["echo one"]));
    let first = env.finished(first).await;
    assert_final(&first, JobStatus::Success, None, None);
    let m1 = machine_of(&first);
    assert!(
        warm.contains(&m1),
        "the job took a warm sandbox: {m1} of {warm:?}"
    );
    // MaxBuilds = 1: that sandbox goes, and IdleCount brings the pool back to two.
    let after_first = eventually("the used sandbox replaced", async || {
        let names = env.sandboxes().await;
        (names.len() == 2 && !names.contains(&m1)).then_some(names)
    })
    .await;

    let second = env.enqueue(job("second", &["echo two"]));
    let second = env.finished(second).await;
    assert_final(&second, JobStatus::Success, None, None);
    let m2 = machine_of(&second);
    assert_ne!(m1, m2, "a fresh sandbox runs the next job");
    assert!(after_first.contains(&m2), "{m2} of {after_first:?}");
    eventually("the second used sandbox replaced", async || {
        let names = env.sandboxes().await;
        (names.len() == 2 && !names.contains(&m2)).then_some(())
    })
    .await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_time_removes_the_surplus_after_a_burst() {
    let settings = Settings {
        idle_count: 1,
        idle_time: 2,
        limit: 4,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("pool_idle_time", settings).await else {
        return;
    };
    env.start().await;
    env.sandboxes_become(1).await;

    let burst: Vec<u64> = (0..3)
        .map(|i| env.enqueue(job(&format!("burst-{i}"), &["echo started", "sleep 8"])))
        .collect();
    // Three jobs at once, one idle machine kept on top: the fleet grows to four.
    let grown = env.sandboxes_become(4).await;
    for id in &burst {
        assert_final(&env.finished(*id).await, JobStatus::Success, None, None);
    }
    // Then the surplus idles out after IdleTime, and the pool is back to IdleCount.
    let kept = env.sandboxes_become(1).await;
    assert!(grown.contains(&kept[0]), "{kept:?} of {grown:?}");
    eventually(
        "the status shows one idle machine and nothing in flight",
        async || {
            let status = env.status()?;
            let runner = &status["runners"][0];
            let settled = runner["idle"] == 1
                && runner["creating"] == 0
                && runner["removing"] == 0
                && runner["busy"] == 0;
            settled.then_some(())
        },
    )
    .await;
    env.finish().await;
}
