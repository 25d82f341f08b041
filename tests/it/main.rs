mod config;
mod daemon;
mod docker_machine;
mod gitlab_cli;
mod packaging;
mod readme;
mod replay;
mod simulate;
