//! The AWS test bed: moto's Auto Scaling group, and the reconciler that turns its instances
//! into SSH servers on exactly their private addresses.

use drover_docker::ssh::keys;
use drover_docker::testing::aws::{Moto, Reconciler, TestGroup};

use crate::support::{connection, engine, manager_key, remote_docker};

#[tokio::test]
async fn instances_of_the_group_become_ssh_hosts_and_go_when_terminated() {
    let Some(docker) = engine().await else { return };
    let Some(moto) = Moto::start().await else {
        return;
    };
    let group = TestGroup::setup(&moto, "drover-ci", 4).expect("set up the group");
    // Idempotent: a second set-up finds the group.
    let group = TestGroup::setup(&moto, &group.name, 4).expect("set up again");
    let info = group.info().expect("describe");
    assert_eq!((info.desired, info.min, info.max), (0, 0, 4));
    assert!(info.protected, "new instances are protected from scale-in");
    assert_eq!(info.suspended, ["AZRebalance"]);

    let dir = tempfile::tempdir().unwrap();
    let key = manager_key(dir.path());
    let reconciler = Reconciler {
        docker: docker.clone(),
        group: group.clone(),
        authorized_key: keys::authorized_key(&key),
    };
    reconciler.remove_all().await.expect("clean slate");

    group.set_desired(2).expect("SetDesiredCapacity");
    let instances = group.instances().expect("instances");
    assert_eq!(instances.len(), 2, "{instances:?}");
    for i in &instances {
        assert_eq!(i.lifecycle, "InService");
        let ip = i.private_ip.as_deref().expect("a private address");
        assert!(
            ip.starts_with("127.0.1."),
            "{ip}: the subnet is 127.0.1.0/24"
        );
    }
    let live = reconciler.reconcile().await.expect("reconcile");
    assert_eq!(live.len(), 2);
    // Each instance answers SSH on its own address, with Docker behind it.
    for (id, address) in &live {
        let conn = connection(address, key.clone());
        let docker = remote_docker(&conn);
        docker
            .ping()
            .await
            .unwrap_or_else(|e| panic!("{id} at {address}: {e}"));
        let info = docker.info().await.expect("info over ssh");
        assert!(info.id.is_some());
    }
    // A second pass changes nothing.
    assert_eq!(reconciler.reconcile().await.expect("again"), live);

    let (gone, gone_address) = live
        .iter()
        .next()
        .map(|(i, a)| (i.clone(), a.clone()))
        .unwrap();
    group
        .terminate(&gone)
        .expect("TerminateInstanceInAutoScalingGroup");
    assert_eq!(group.info().expect("describe").desired, 1, "decremented");
    let after = reconciler
        .reconcile()
        .await
        .expect("reconcile after terminate");
    assert_eq!(after.len(), 1);
    assert!(!after.contains_key(&gone));
    let containers = reconciler.containers().await.expect("containers");
    assert!(
        !containers.values().any(|i| i == &gone),
        "the terminated instance's container is gone: {containers:?}"
    );
    assert_eq!(containers.len(), 1);
    let err = connection(&gone_address, key.clone()).docker_stream().await;
    assert!(err.is_err(), "nothing answers at {gone_address} any more");

    reconciler.remove_all().await.expect("clean up");
}
