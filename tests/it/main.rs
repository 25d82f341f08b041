mod config;
mod daemon;
mod docker_machine;
mod gitlab_cli;
mod packaging;
mod replay;
mod simulate;
