//! `drover run` with a registry (Debian's `docker-registry` on loopback, behind htpasswd): the
//! sandboxes pre-pull a private default image and a job's image comes from the mirror named by
//! `engine-registry-mirror`, both with `DOCKER_AUTH_CONFIG` from `[[runners]] environment`.

use bollard::query_parameters::RemoveImageOptions;
use drover_docker::testing::BUSYBOX_IMAGE;
use drover_docker::testing::registry::{Basic, TestRegistry};
use drover_gitlab::fake::JobStatus;

use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_image_only_the_mirror_serves_runs_with_the_runners_credentials() {
    let auth = Basic {
        username: "drover-e2e".to_string(),
        password: "E2e-mirror-s3cret".to_string(),
    };
    let Some(registry) = TestRegistry::start(Some(auth.clone())).await else {
        return;
    };
    let Some(mut env) = Env::new("registry_mirror", Settings::pool()).await else {
        return;
    };
    let default_repo = format!("private/default-{}", env.short);
    let default_image = format!("{}/{default_repo}:1", registry.host());
    let job_image = format!("drover-e2e-mirror-{}:1", env.short);
    registry
        .push(&env.docker, BUSYBOX_IMAGE, &default_repo, "1")
        .await;
    registry
        .push(
            &env.docker,
            BUSYBOX_IMAGE,
            &format!("library/drover-e2e-mirror-{}", env.short),
            "1",
        )
        .await;
    let images = [default_image.clone(), job_image.clone()];
    let _remove = RemoveImages(env.docker.clone(), images.to_vec());
    for image in &images {
        assert!(env.docker.inspect_image(image).await.is_err(), "{image}");
    }

    env.settings.image = default_image.clone();
    env.write_config();
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    let auth_config = format!(
        r#"{{"auths": {{"{}": {{"username": "{}", "password": "{}"}}}}}}"#,
        registry.host(),
        auth.username,
        auth.password
    );
    let limit_line = format!("  limit = {}\n", env.settings.limit);
    let config = config.replacen(
        &limit_line,
        &format!("{limit_line}  environment = ['DOCKER_AUTH_CONFIG={auth_config}']\n"),
        1,
    ) + &format!(
        "    MachineOptions = [\"engine-registry-mirror={}\"]\n",
        registry.url()
    );
    std::fs::write(env.config_path(), config).unwrap();

    env.start().await;
    // The image name is expanded from the job's variables.
    let id = env.enqueue(
        job(
            "mirrored",
            &["echo concurrent=$CI_CONCURRENT_ID/$CI_CONCURRENT_PROJECT_ID image=$CI_JOB_IMAGE"],
        )
        .image("drover-e2e-mirror-$RUNNER_SUFFIX:1")
        .variable("RUNNER_SUFFIX", &env.short),
    );
    let view = env.finished(id).await;
    assert_final(&view, JobStatus::Success, None, None);
    let trace = text(&view);
    assert!(
        trace.contains(&format!(
            "Pulling docker image {job_image} from mirror {} ...",
            registry.url()
        )),
        "{trace}"
    );
    assert!(
        trace.contains("Authenticating with credentials from $DOCKER_AUTH_CONFIG"),
        "{trace}"
    );
    assert!(
        trace.contains(&format!("concurrent=0/0 image={job_image}")),
        "{trace}"
    );
    assert!(!trace.contains(&auth.password), "{trace}");
    assert!(
        !env.log().contains(&auth.password),
        "the registry password is in the daemon's log"
    );
    for image in &images {
        assert!(env.docker.inspect_image(image).await.is_ok(), "{image}");
    }
    env.finish().await;
}

/// Removes the test's images from the engine, whatever the test's end.
struct RemoveImages(bollard::Docker, Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        let (docker, images) = (self.0.clone(), std::mem::take(&mut self.1));
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            for image in images {
                let options = RemoveImageOptions {
                    noprune: true,
                    ..Default::default()
                };
                let _ = runtime.block_on(docker.remove_image(&image, Some(options), None));
            }
        })
        .join();
    }
}
