//! Archives in and out of a builds volume through the engine's archive endpoints, with a container
//! that is created and never started.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, VolumeCreateOptions};
use bollard::query_parameters::CreateContainerOptions;
use drover_docker::archive::{self, ArchiveError, Format, Selection};
use drover_docker::labels;
use drover_docker::testing::BUSYBOX_IMAGE;
use zip::ZipArchive;
use zip::write::SimpleFileOptions;

use crate::support::*;

/// A created (never started) busybox container with a fresh volume at `/builds`.
async fn endpoint(docker: &Docker, runner: &str) -> String {
    let labels = HashMap::from([(labels::RUNNER.to_string(), runner.to_string())]);
    let volume = format!("{runner}-archive-builds");
    docker
        .create_volume(VolumeCreateOptions {
            name: Some(volume.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let name = format!("{runner}-archive");
    let body = ContainerCreateBody {
        image: Some(BUSYBOX_IMAGE.to_string()),
        cmd: Some(vec!["true".to_string()]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{volume}:/builds")]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    docker.create_container(Some(options), body).await.unwrap();
    name
}

fn zip_with(path: &std::path::Path) {
    let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
    let options = SimpleFileOptions::default();
    zip.add_directory("out/", options.unix_permissions(0o755))
        .unwrap();
    zip.start_file("out/app.txt", options.unix_permissions(0o644))
        .unwrap();
    zip.write_all(b"built\n").unwrap();
    zip.start_file("out/run.sh", options.unix_permissions(0o755))
        .unwrap();
    zip.write_all(b"#!/bin/sh\n").unwrap();
    zip.add_symlink("out/latest", "app.txt", options).unwrap();
    zip.add_directory("out/empty/", options.unix_permissions(0o755))
        .unwrap();
    zip.add_directory("out/tmp/", options).unwrap();
    zip.start_file("out/tmp/scratch", options).unwrap();
    zip.write_all(b"scratch").unwrap();
    zip.add_directory("reports/", options).unwrap();
    zip.start_file("reports/junit.xml", options).unwrap();
    zip.write_all(b"<testsuite/>").unwrap();
    zip.finish().unwrap();
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn files_go_in_and_come_out_through_the_archive_endpoints() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let container = endpoint(&docker, &runner).await;
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in.zip");
    zip_with(&input);

    // In: the project directory does not exist yet and is created on the way.
    let counts = archive::extract(&docker, &container, "/builds/g/p", &input, work.path())
        .await
        .unwrap();
    assert_eq!((counts.files, counts.dirs, counts.symlinks), (4, 4, 1));

    // Out: `out/` without its `tmp/`, as a zip.
    let selection = Selection {
        paths: strings(&["out/", "missing/*.txt"]),
        exclude: strings(&["out/tmp"]),
        extra: vec![],
    };
    let zip_path = work.path().join("out.zip");
    let collected = archive::collect(
        &docker,
        &container,
        "/builds/g/p",
        &selection,
        Format::Zip,
        work.path(),
        &zip_path,
    )
    .await
    .unwrap();
    assert!(collected.size > 0);
    assert_eq!(
        collected.warnings.len(),
        1,
        "the pattern without a match: {:?}",
        collected.warnings
    );
    assert!(collected.warnings[0].contains("missing/*.txt: no matching files"));
    assert!(
        collected
            .notes
            .iter()
            .any(|n| n == "out/tmp: excluded 1 files"),
        "{:?}",
        collected.notes
    );
    let mut zip = ZipArchive::new(File::open(&zip_path).unwrap()).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().to_string()).collect();
    assert_eq!(
        names,
        [
            "out/",
            "out/app.txt",
            "out/empty/",
            "out/latest",
            "out/run.sh"
        ]
    );
    let mut text = String::new();
    zip.by_name("out/app.txt")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "built\n");
    assert_eq!(
        zip.by_name("out/run.sh").unwrap().unix_mode().unwrap() & 0o777,
        0o755
    );
    let mut target = String::new();
    let mut link = zip.by_name("out/latest").unwrap();
    assert!(link.is_symlink());
    link.read_to_string(&mut target).unwrap();
    assert_eq!(target, "app.txt");
    drop(link);

    // A report: one gzip member.
    let report = Selection {
        paths: strings(&["reports/junit.xml"]),
        ..Default::default()
    };
    let gz = work.path().join("junit.xml.gz");
    let collected = archive::collect(
        &docker,
        &container,
        "/builds/g/p",
        &report,
        Format::Gzip,
        work.path(),
        &gz,
    )
    .await
    .unwrap();
    assert_eq!(collected.entries, 1);
    let mut xml = String::new();
    flate2::read::GzDecoder::new(File::open(&gz).unwrap())
        .read_to_string(&mut xml)
        .unwrap();
    assert_eq!(xml, "<testsuite/>");

    // Nothing matched: no archive, no error.
    let none = Selection {
        paths: strings(&["nothing-here/"]),
        ..Default::default()
    };
    let collected = archive::collect(
        &docker,
        &container,
        "/builds/g/p",
        &none,
        Format::Zip,
        work.path(),
        &work.path().join("none.zip"),
    )
    .await
    .unwrap();
    assert_eq!(collected.entries, 0);

    // A corrupt archive is refused before anything reaches the container.
    let garbage = work.path().join("garbage.zip");
    std::fs::write(&garbage, b"PK\x03\x04 but not really a zip").unwrap();
    let err = archive::extract(&docker, &container, "/builds/g/p", &garbage, work.path())
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err}");
}
