
mod config;
mod gitlab_cli;
mod replay;
mod simulate;
