//! The Python tools some tests drive (a client generator, schemathesis), each installed from
//! PyPI into a virtualenv under `target/` by a script in `scripts/` that the test runs itself
//! when the tool is missing, so a fresh clone needs no step before `cargo test`; and running a
//! process bounded in time, its output captured.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds installing a tool from PyPI, which a slow network makes slow.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A virtualenv's directory: `env_var` if set (relative to the repository, as in the scripts),
/// else `default` under the repository.
pub fn venv(env_var: &str, default: &str) -> PathBuf {
    root().join(std::env::var_os(env_var).unwrap_or_else(|| default.into()))
}

/// Runs `scripts/<script>`, which installs its tool unless it is there already (then it only
/// checks) and takes a lock, so test processes running at once take turns; answers its output,
/// or why it failed.
pub fn install(script: &str) -> Result<String, String> {
    let logs = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
    let mut command = Command::new("bash");
    command
        .arg(root().join("scripts").join(script))
        .current_dir(root());
    let (installed, output) =
        run_bounded(command, &logs.path().join("install.log"), INSTALL_TIMEOUT);
    if installed { Ok(output) } else { Err(output) }
}

/// `PATH` with a virtualenv's `bin` first.
pub fn path_with(bin: &Path) -> std::ffi::OsString {
    let mut path = std::ffi::OsString::from(bin);
    if let Some(rest) = std::env::var_os("PATH") {
        path.push(":");
        path.push(rest);
    }
    path
}

/// Runs `command` with stdout and stderr into one log, killing it after `timeout`; answers
/// whether it exited successfully, and its output.
pub fn run_bounded(mut command: Command, log: &Path, timeout: Duration) -> (bool, String) {
    let out = File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = std::fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(status) if status.success() => (true, output),
        Some(status) => {
            output.push_str(&format!("\n[{status}]"));
            (false, output)
        }
        None => {
            output.push_str(&format!("\n[killed after {timeout:?}]"));
            (false, output)
        }
    }
}
