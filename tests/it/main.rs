mod config;
mod daemon;
mod gitlab_cli;
mod replay;
mod simulate;
