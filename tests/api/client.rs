//! A client generated from `openapi/openapi.json` by a standard generator drives the whole
//! lifecycle against the real binary. openapi-python-client (from PyPI, installed into
//! `target/pyenv` by `scripts/python-client-env`, which `.ci/run` runs) generates the package
//! into a temp dir, with warnings treated as errors; `client_lifecycle.py` then creates an
//! account, mints, lists and revokes keys, and registers, reads, lists, updates (with
//! `If-Match`), disables, enables and revokes a credential and reads its events, using only the
//! generated models; an unknown id, a stale revision and a revoked key answer the error envelope.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use keyledger::crypto::MasterKey;

use crate::helpers::{ADMIN_TOKEN, listening_address, serve_command};

/// Bounds each Python process: the generator (with its ruff post-hooks) and the script.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(120);

/// The virtualenv `scripts/python-client-env` installs the generator into.
fn pyenv() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A relative KEYLEDGER_PYENV is relative to the repository, as in the script.
    root.join(std::env::var_os("KEYLEDGER_PYENV").unwrap_or_else(|| "target/pyenv".into()))
}

/// The real binary, on a fresh store, with the admin token of the other tests.
struct Server {
    child: Child,
    address: String,
    log: PathBuf,
    // Kept open so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let log = dir.join("server.log");
        let master_key = MasterKey::generate().to_base64();
        let mut child = serve_command(&dir.join("data"), master_key.expose())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("server log"))
            .spawn()
            .expect("start keyledger");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let address = listening_address(&mut stdout);
        Server {
            child,
            address,
            log,
            _stdout: stdout,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` with stdout and stderr into one log, killing it after `PYTHON_TIMEOUT`;
/// answers whether it exited successfully, and its output.
fn run_bounded(mut command: Command, log: &Path) -> (bool, String) {
    let out = File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let deadline = Instant::now() + PYTHON_TIMEOUT;
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
            output.push_str(&format!("\n[killed after {PYTHON_TIMEOUT:?}]"));
            (false, output)
        }
    }
}

#[test]
fn a_generated_python_client_drives_the_whole_lifecycle() {
    let pyenv = pyenv();
    let bin = pyenv.join("bin");
    let generator = bin.join("openapi-python-client");
    assert!(
        generator.is_file(),
        "openapi-python-client is not installed at {}: run `scripts/python-client-env` (which \
         .ci/run runs) to install it into target/pyenv",
        generator.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");

    // The generator runs ruff as a post-hook, found on PATH.
    let mut path = std::ffi::OsString::from(&bin);
    if let Some(rest) = std::env::var_os("PATH") {
        path.push(":");
        path.push(rest);
    }
    let mut generate = Command::new(&generator);
    generate
        .args(["generate", "--meta", "none", "--fail-on-warning", "--path"])
        .arg(root.join("openapi/openapi.json"))
        .arg("--output-path")
        .arg(dir.path().join("keyledger_client"))
        .current_dir(dir.path())
        .env("PATH", &path);
    let (generated, output) = run_bounded(generate, &dir.path().join("generate.log"));
    assert!(
        generated,
        "openapi-python-client rejected openapi/openapi.json or warned about it:\n{output}"
    );

    let server = Server::start(dir.path());
    let mut script = Command::new(bin.join("python"));
    script
        .arg(root.join("tests/api/client_lifecycle.py"))
        .args([server.address.as_str(), ADMIN_TOKEN])
        .current_dir(dir.path())
        .env("PYTHONPATH", dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PATH", &path);
    let (passed, output) = run_bounded(script, &dir.path().join("script.log"));
    let server_log = std::fs::read_to_string(&server.log).unwrap_or_default();
    drop(server);
    assert!(
        passed,
        "the generated client's lifecycle failed:\n{output}\n--- server log ---\n{server_log}"
    );
    assert!(output.contains("ok: the generated client drove the whole lifecycle"));
}
