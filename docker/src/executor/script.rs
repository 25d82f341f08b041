//! The shell scripts the step containers run, and the files put into each step container.
//!
//! The job's variables reach a step through its script, which exports them (as GitLab Runner's
//! script on stdin does), not through the container's environment: Linux refuses an environment
//! string over [`ENV_STRING_MAX`] when the container's first process starts, so a large variable
//! would fail the step before any of it runs.

use std::io;

use super::spec::{
    BuildSpec, GitStrategy, Shell, StepSpec, SubmoduleStrategy, Variable, without_credentials,
};

/// The longest `KEY=value` string Linux passes to a new process (`MAX_ARG_STRLEN`: 32 pages of
/// 4 KiB, the terminating NUL included).
pub(crate) const ENV_STRING_MAX: usize = 32 * 4096 - 1;

/// Where drover's files live inside a step container. In the container's own filesystem, not the
/// builds volume: they go away with the container, so file variables never outlive the job.
pub(crate) const DROVER_DIR: &str = "/.drover";
pub(crate) const SCRIPT_PATH: &str = "/.drover/step.sh";

/// The path a file variable's content is written to (the variable's value in the environment).
pub(crate) fn file_variable_path(key: &str) -> String {
    format!("{DROVER_DIR}/vars/{}", crate::labels::sanitize(key))
}

/// `'…'` for a POSIX shell.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn prologue(shell: Shell) -> &'static str {
    match shell {
        Shell::Sh => "set -e\n",
        Shell::Bash => "set -eo pipefail\n",
    }
}

/// Whether a POSIX shell can `export` a variable of this name.
pub(crate) fn is_shell_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `variable` goes into the container's environment instead of the script: only a name
/// the shell cannot export does (Docker takes any name).
pub(crate) fn in_environment(variable: &Variable) -> bool {
    !is_shell_name(&variable.key) || BASH_READ_ONLY.contains(&variable.key.as_str())
}

/// Names bash refuses to assign (`export UID=1000` fails, and ends the step under `set -e`); in
/// the environment bash ignores them, as it always did under GitLab's docker executor.
const BASH_READ_ONLY: &[&str] = &[
    "UID",
    "EUID",
    "PPID",
    "SHELLOPTS",
    "BASHOPTS",
    "BASH_VERSINFO",
];

/// `export KEY='value'` for the job's variables, in order (later keys win); a file variable's
/// value is its file's path. Values are single-quoted: no `$` expansion, as in the environment.
///
/// `all: false` leaves out a variable too long for an environment string: once exported, every
/// program the script starts would fail ("Argument list too long"), git and mkdir included.
fn exports(out: &mut String, spec: &BuildSpec, all: bool) {
    for v in spec.variables.iter().filter(|v| !in_environment(v)) {
        if !all && !v.file && v.key.len() + 1 + v.value.len() > ENV_STRING_MAX {
            continue;
        }
        let value = match v.file {
            true => file_variable_path(&v.key),
            false => v.value.clone(),
        };
        out.push_str(&format!("export {}={}\n", v.key, quote(&value)));
    }
}

/// What the trace says up front about variables too long for an environment string.
pub(crate) fn variable_warnings(spec: &BuildSpec) -> Vec<String> {
    let mut warnings = Vec::new();
    for v in &spec.variables {
        let len = v.key.len() + 1 + v.value.len();
        if v.file || len <= ENV_STRING_MAX {
            continue;
        }
        warnings.push(if in_environment(v) {
            format!(
                "the variable {} is left out: {len} bytes as KEY=value, and its name is no shell \
                 name, so it could only go into the environment, where Linux refuses a string \
                 over {ENV_STRING_MAX} bytes",
                v.key
            )
        } else {
            format!(
                "the variable {} is {len} bytes as KEY=value: the script has it, but a program \
                 the script starts fails with \"Argument list too long\" while it is exported \
                 (Linux refuses an environment string over {ENV_STRING_MAX} bytes); a file \
                 variable has no such limit",
                v.key
            )
        });
    }
    warnings
}

fn enter_project_dir(out: &mut String, project_dir: &str) {
    let dir = quote(project_dir);
    out.push_str(&format!("mkdir -p {dir}\ncd {dir}\n"));
}

/// A user step: each command is echoed in green (`$ cmd`), then run; the first failure ends it.
pub(crate) fn user_step(spec: &BuildSpec, step: &StepSpec) -> String {
    let mut out = String::from(prologue(spec.shell));
    // Before the exports: `mkdir` is a program, which a huge exported variable would stop.
    enter_project_dir(&mut out, &spec.project_dir);
    exports(&mut out, spec, true);
    for command in &step.script {
        out.push_str(&format!(
            "printf '\\033[32;1m$ %s\\033[0;m\\n' {}\n{command}\n",
            quote(command)
        ));
    }
    out
}

/// Fetches the sources into the project directory per `GIT_STRATEGY`. The repository URL (which may
/// carry the job token) is never printed nor stored in `.git/config`.
///
/// With a `user` for the script steps, everything is made writable for all (as GitLab Runner's
/// helper does), and the project directory is made even without sources: the sources step runs
/// as the image's user, who owns the builds volume.
pub(crate) fn get_sources(spec: &BuildSpec, image: &str) -> String {
    let git = &spec.git;
    let dir = quote(&spec.project_dir);
    let mut out = String::from(prologue(spec.shell));
    // The sources step runs git: it gets no variable too long to export (the user steps do).
    exports(&mut out, spec, false);
    if spec.container_options.user.is_some() {
        out.push_str("umask 0000\n");
    }
    match git.strategy {
        GitStrategy::None => {
            out.push_str(&format!(
                "echo 'Skipping Git repository setup'\nmkdir -p {dir}\n"
            ));
            return out;
        }
        GitStrategy::Empty => {
            out.push_str(&format!(
                "echo 'Skipping Git repository setup and creating an empty build directory'\n\
                 rm -rf {dir}\nmkdir -p {dir}\n"
            ));
            return out;
        }
        GitStrategy::Fetch | GitStrategy::Clone => {}
    }
    out.push_str(&format!(
        "if ! command -v git >/dev/null 2>&1; then\n  \
         echo 'ERROR: the image {image} has no git, so the sources cannot be fetched. \
         Use an image that has git, set helper_image, or set GIT_STRATEGY=none.' >&2\n  \
         exit 1\nfi\n",
        image = image.replace('\'', "")
    ));
    out.push_str("cd /\n");
    if git.strategy == GitStrategy::Clone {
        out.push_str(&format!(
            "echo 'Cloning repository into {}...'\nrm -rf {dir}\n",
            spec.project_dir.replace('\'', "")
        ));
    } else {
        out.push_str(&format!(
            "if [ -d {dir}/.git ]; then echo 'Fetching changes...'; \
             else echo 'Initialized empty repository, fetching changes...'; fi\n"
        ));
    }
    out.push_str(&format!("mkdir -p {dir}\ncd {dir}\n"));
    let clean_url = without_credentials(&git.repo_url);
    // A working copy left by an earlier job: as GitLab Runner, drop the locks an interrupted git
    // left and the config and hooks a job may have changed, so that nothing of it runs again.
    out.push_str(
        "if [ -d .git ]; then\n  \
         rm -f .git/index.lock .git/shallow.lock .git/HEAD.lock .git/config.lock .git/config\n  \
         rm -rf .git/hooks\n  \
         find .git/refs -name '*.lock' -type f -exec rm -f {} + 2>/dev/null || true\n\
         fi\n\
         git -c init.defaultBranch=main init -q --template= .\n\
         git remote remove origin >/dev/null 2>&1 || true\n",
    );
    // The remote keeps the URL without credentials; the fetch gets the full one on its command
    // line, so the job token is never written into the (possibly long-lived) builds volume.
    out.push_str(&format!("git remote add origin {}\n", quote(&clean_url)));
    let refspecs: Vec<String> = if git.refspecs.is_empty() {
        vec![
            "+refs/heads/*:refs/remotes/origin/*".into(),
            "+refs/tags/*:refs/tags/*".into(),
        ]
    } else {
        git.refspecs.clone()
    };
    // A full fetch into a shallow working copy (a fetch strategy after a shallow job) deepens it.
    let depth = if git.depth > 0 {
        format!(" --depth {}", git.depth)
    } else {
        out.push_str("unshallow=\n[ -f .git/shallow ] && unshallow=--unshallow\n");
        " $unshallow".to_string()
    };
    let specs: Vec<String> = refspecs.iter().map(|r| quote(r)).collect();
    // A private CA (`CI_SERVER_TLS_CA_FILE`, from the runner's `tls-ca-file`) for GitLab's host
    // only, as GitLab Runner configures git: the job's other https remotes keep the system's.
    out.push_str("set --\n");
    if let Some((scheme, host)) = clean_url.split_once("://")
        && scheme.eq_ignore_ascii_case("https")
    {
        let host = host.split('/').next().unwrap_or(host);
        out.push_str(&format!(
            "if [ -n \"${{CI_SERVER_TLS_CA_FILE:-}}\" ]; then set -- -c \"http.https://{}/.sslCAInfo=$CI_SERVER_TLS_CA_FILE\"; fi\n",
            host.replace(['"', '$', '`', '\\'], "")
        ));
    }
    out.push_str(&format!(
        "git \"$@\" fetch --no-recurse-submodules{depth}{} {} {}\n",
        words(&git.fetch_flags),
        quote(&git.repo_url),
        specs.join(" ")
    ));
    let target = if git.sha.is_empty() {
        &git.ref_name
    } else {
        &git.sha
    };
    let short: String = target.chars().take(8).collect();
    if git.checkout {
        out.push_str(&format!(
            "echo {}\ngit -c advice.detachedHead=false -c submodule.recurse=false checkout -q -f {}\n",
            quote(&format!("Checking out {short} as {}...", git.ref_name)),
            quote(target)
        ));
        if !git.clean_flags.is_empty() {
            out.push_str(&format!("git clean{}\n", words(&git.clean_flags)));
        }
    } else {
        out.push_str("echo 'Skipping Git checkout'\n");
    }
    submodules(&mut out, git);
    out
}

/// `GIT_SUBMODULE_STRATEGY` normal/recursive, as GitLab Runner sets submodules up: init, sync,
/// clean and reset what is there, update (once more after a sync if it fails), clean again.
/// Submodules on the project's own host are fetched with the job's credentials, given on the
/// command line only.
fn submodules(out: &mut String, git: &super::spec::GitSpec) {
    let subs = &git.submodules;
    let recursive = match subs.strategy {
        SubmoduleStrategy::None => return,
        SubmoduleStrategy::Normal => "",
        SubmoduleStrategy::Recursive => " --recursive",
    };
    let paths = match subs.paths.is_empty() {
        true => String::new(),
        false => format!(" --{}", words(&subs.paths)),
    };
    let clean = match git.clean_flags.is_empty() {
        true => " -ffdx".to_string(),
        false => words(&git.clean_flags),
    };
    let credentials = match credentials_rewrite(&git.repo_url) {
        Some((with, without)) => {
            format!("-c {} ", quote(&format!("url.{with}.insteadOf={without}")))
        }
        None => String::new(),
    };
    let depth = match subs.depth {
        0 => String::new(),
        d => format!(" --depth {d}"),
    };
    let update = format!(
        "git \"$@\" {credentials}submodule update --init{recursive}{depth}{}{paths}",
        words(&subs.update_flags)
    );
    let label = if recursive.is_empty() {
        "Updating/initializing submodules..."
    } else {
        "Updating/initializing submodules recursively..."
    };
    out.push_str(&format!(
        "echo {}\ngit submodule init{paths}\ngit submodule sync{recursive}{paths}\n\
         git submodule foreach{recursive} git clean{clean}\n\
         git submodule foreach{recursive} git reset --hard\n\
         {update} || {{ git submodule sync{recursive}{paths} && {update}; }}\n\
         git submodule foreach{recursive} git clean{clean}\n",
        quote(label)
    ));
}

/// For a URL with credentials: `(scheme://user:secret@host/, scheme://host/)`, so that git
/// reaches the project's host with them for submodules too.
fn credentials_rewrite(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (_, host) = authority.rsplit_once('@')?;
    Some((
        format!("{scheme}://{authority}/"),
        format!("{scheme}://{host}/"),
    ))
}

/// ` 'a' 'b'`: each word quoted, each after a space.
fn words(list: &[String]) -> String {
    list.iter().map(|w| format!(" {}", quote(w))).collect()
}

/// A file to put into a step container before it starts.
pub(crate) struct FileEntry {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// A tar archive of `files`, to extract at `/`.
pub(crate) fn archive(files: &[FileEntry]) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let relative = file.path.trim_start_matches('/');
        let mut parent = std::path::Path::new(relative).parent();
        let mut chain = Vec::new();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(dir.to_path_buf());
            parent = dir.parent();
        }
        for dir in chain.into_iter().rev() {
            if dirs.insert(dir.clone()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, &dir, io::empty())?;
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(file.mode);
        header.set_size(file.content.len() as u64);
        builder.append_data(&mut header, relative, file.content.as_slice())?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::executor::spec::{GitSpec, ImageSpec, StepName, When};

    fn spec() -> BuildSpec {
        BuildSpec {
            job_id: 1,
            runner: "r".into(),
            image: ImageSpec::new("img"),
            credentials: vec![],
            registry_mirrors: vec![],
            variables: vec![],
            steps: vec![],
            services: vec![],
            git: GitSpec::none(),
            timeout: Duration::from_secs(60),
            builds_dir: "/builds".into(),
            project_dir: "/builds/g/p".into(),
            shell: Shell::Sh,
            volumes: vec![],
            privileged: false,
            container_options: Default::default(),
            helper_image: None,
            warnings: vec![],
            caches: vec![],
            kept_volumes: vec![],
            artifacts: vec![],
            dependencies: vec![],
            transport: Default::default(),
        }
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn user_steps_echo_then_run_each_command() {
        let step = StepSpec {
            name: StepName::Script,
            script: vec!["echo 'hi'".into(), "false".into()],
            timeout: Duration::from_secs(1),
            when: When::OnSuccess,
            allow_failure: false,
        };
        let script = user_step(&spec(), &step);
        assert!(script.starts_with("set -e\n"));
        assert!(script.contains("cd '/builds/g/p'\n"));
        let echo = script.find(r"'echo '\''hi'\'''").unwrap();
        let run = script.find("\necho 'hi'\n").unwrap();
        assert!(echo < run && script.ends_with("\nfalse\n"), "{script}");
    }

    #[test]
    fn the_scripts_export_the_variables_the_shell_can_name() {
        let mut s = spec();
        let mut file = Variable::new("CONFIG", "a=1\n");
        file.file = true;
        s.variables = vec![
            Variable::new("QUOTED", "it's $HOME"),
            file,
            Variable::new("my-var", "dash"),
            Variable::new("QUOTED", "later wins"),
        ];
        let step = StepSpec {
            name: StepName::Script,
            script: vec!["true".into()],
            timeout: Duration::from_secs(1),
            when: When::OnSuccess,
            allow_failure: false,
        };
        for script in [user_step(&s, &step), get_sources(&s, "img")] {
            let exports: Vec<&str> = script
                .lines()
                .filter(|l| l.starts_with("export "))
                .collect();
            assert_eq!(
                exports,
                vec![
                    r"export QUOTED='it'\''s $HOME'",
                    "export CONFIG='/.drover/vars/CONFIG'",
                    "export QUOTED='later wins'",
                ],
                "{script}"
            );
            // The user step enters the project directory first: `mkdir` must run before a huge
            // export could stop it.
            assert!(
                script.starts_with("set -e\nexport ")
                    || script.starts_with("set -e\nmkdir -p '/builds/g/p'\ncd "),
                "{script}"
            );
        }
        assert!(in_environment(&Variable::new("my-var", "")));
        assert!(
            in_environment(&Variable::new("UID", "1000")),
            "bash refuses it"
        );
        assert!(!in_environment(&Variable::new("_A1", "")));
        assert!(!is_shell_name("1A") && !is_shell_name("") && !is_shell_name("Ä"));
    }

    #[test]
    fn variables_too_long_for_an_environment_string_are_named_with_the_limit() {
        let mut s = spec();
        let big = "x".repeat(ENV_STRING_MAX);
        let mut file = Variable::new("BIG_FILE", big.clone());
        file.file = true;
        s.variables = vec![
            Variable::new("BIG", big.clone()),
            Variable::new("big-name", big.clone()),
            file,
            Variable::new("FITS", "x".repeat(ENV_STRING_MAX - "FITS=".len())),
        ];
        // Only the user steps export a variable that long: the sources step runs git.
        let step = StepSpec {
            name: StepName::Script,
            script: vec!["true".into()],
            timeout: Duration::from_secs(1),
            when: When::OnSuccess,
            allow_failure: false,
        };
        assert!(user_step(&s, &step).contains("\nexport BIG='"));
        assert!(!get_sources(&s, "img").contains("export BIG="));
        assert!(get_sources(&s, "img").contains("export FITS="));
        let warnings = variable_warnings(&s);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("the variable BIG is 131075 bytes")
                && warnings[0].contains("over 131071 bytes"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with("the variable big-name is left out"),
            "{warnings:?}"
        );
    }

    #[test]
    fn sources_script_never_prints_nor_stores_the_token() {
        let mut s = spec();
        s.git = GitSpec {
            strategy: GitStrategy::Clone,
            repo_url: "https://gitlab-ci-token:glcbt-SECRET@gitlab.local/g/p.git".into(),
            sha: "0123456789abcdef".into(),
            ref_name: "main".into(),
            refspecs: vec![],
            depth: 20,
            ..GitSpec::none()
        };
        let script = get_sources(&s, "img");
        let echoes: Vec<&str> = script.lines().filter(|l| l.starts_with("echo")).collect();
        assert!(echoes.iter().all(|l| !l.contains("SECRET")), "{echoes:?}");
        assert!(script.contains("--depth 20"));
        assert!(script.contains("git remote add origin 'https://gitlab.local/g/p.git'\n"));
        let stored: Vec<&str> = script.lines().filter(|l| l.contains("SECRET")).collect();
        assert_eq!(stored.len(), 1, "only the fetch sees the token: {stored:?}");
        assert!(stored[0].starts_with("git \"$@\" fetch"), "{stored:?}");
        assert!(
            script.contains(
                "if [ -n \"${CI_SERVER_TLS_CA_FILE:-}\" ]; then set -- -c \
                 \"http.https://gitlab.local/.sslCAInfo=$CI_SERVER_TLS_CA_FILE\"; fi\n"
            ),
            "a private CA is for GitLab's host only: {script}"
        );
        assert!(script.contains("Checking out 01234567 as main..."));
        assert!(!script.contains("umask"), "{script}");
    }

    #[test]
    fn with_a_user_the_sources_step_leaves_everything_writable() {
        let mut s = spec();
        s.container_options.user = Some("65534".into());
        let script = get_sources(&s, "img");
        assert!(script.starts_with("set -e\numask 0000\n"), "{script}");
        assert!(
            script.ends_with("echo 'Skipping Git repository setup'\nmkdir -p '/builds/g/p'\n"),
            "without sources, only the directory: {script}"
        );
    }

    #[test]
    fn archive_holds_files_with_their_parents() {
        let tar = archive(&[FileEntry {
            path: "/.drover/vars/K".into(),
            content: b"v".to_vec(),
            mode: 0o644,
        }])
        .unwrap();
        let mut a = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec![".drover", ".drover/vars", ".drover/vars/K"]);
    }

    #[test]
    fn git_settings_shape_the_sources_script() {
        let mut s = spec();
        s.git = GitSpec {
            strategy: GitStrategy::Fetch,
            repo_url: "https://gitlab-ci-token:glcbt-SECRET@gitlab.local/g/p.git".into(),
            sha: "0123456789abcdef".into(),
            ref_name: "main".into(),
            fetch_flags: vec!["--no-tags".into()],
            checkout: true,
            clean_flags: vec![],
            ..GitSpec::none()
        };
        s.git.submodules.strategy = SubmoduleStrategy::Normal;
        s.git.submodules.depth = 2;
        s.git.submodules.paths = vec!["libs/a".into()];
        let script = get_sources(&s, "img");
        assert!(
            script.contains("[ -f .git/shallow ] && unshallow=--unshallow"),
            "{script}"
        );
        assert!(
            script.contains("git \"$@\" fetch --no-recurse-submodules $unshallow '--no-tags' "),
            "{script}"
        );
        assert!(
            !script.contains("git clean '"),
            "no clean flags, no clean: {script}"
        );
        assert!(
            script.contains("git submodule sync -- 'libs/a'"),
            "{script}"
        );
        assert!(
            script.contains(
                "git \"$@\" -c 'url.https://gitlab-ci-token:glcbt-SECRET@gitlab.local/.insteadOf=\
                 https://gitlab.local/' submodule update --init --depth 2 -- 'libs/a'"
            ),
            "{script}"
        );
        let secret_lines: Vec<&str> = script.lines().filter(|l| l.contains("SECRET")).collect();
        assert_eq!(
            secret_lines.len(),
            2,
            "the fetch and the update: {secret_lines:?}"
        );
        assert!(
            secret_lines.iter().all(|l| l.starts_with("git ")),
            "{secret_lines:?}"
        );

        s.git.checkout = false;
        let script = get_sources(&s, "img");
        assert!(script.contains("echo 'Skipping Git checkout'"), "{script}");
        assert!(!script.contains("checkout -q -f"), "{script}");

        s.git.strategy = GitStrategy::Empty;
        let script = get_sources(&s, "img");
        assert!(
            script.contains("rm -rf '/builds/g/p'\nmkdir -p '/builds/g/p'\n"),
            "{script}"
        );
        assert!(!script.contains("git "), "{script}");
    }
}
