mod config;
mod daemon;
mod docker_machine;
mod gitlab_cli;
mod replay;
mod simulate;
