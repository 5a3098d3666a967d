//! A client generated from `openapi/openapi.json` by a standard generator drives the whole
//! lifecycle against the real binary. openapi-python-client (from PyPI, installed into
//! `target/pyenv` by `scripts/python-client-env`, which this test runs itself, so a fresh clone
//! needs no step before `cargo test`) generates the package
//! into a temp dir, with warnings treated as errors; `client_lifecycle.py` then creates an
//! account, mints, lists and revokes keys, and registers, reads, lists, updates (with
//! `If-Match`), disables, enables and revokes a credential and reads its events, using only the
//! generated models; an unknown id, a stale revision and a revoked key answer the error envelope.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use keyledger::crypto::MasterKey;

use crate::helpers::python::{install, path_with, root, run_bounded, venv};
use crate::helpers::{ADMIN_TOKEN, Binary, serve_command};

/// Bounds each Python process: the generator (with its ruff post-hooks) and the script.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(120);

/// The virtualenv `scripts/python-client-env` installs the generator into.
fn pyenv() -> PathBuf {
    venv("KEYLEDGER_PYENV", "target/pyenv")
}

/// Runs `scripts/python-client-env` once per test process (see `helpers::python::install`).
fn ensure_generator() -> &'static Result<String, String> {
    static INSTALLED: OnceLock<Result<String, String>> = OnceLock::new();
    INSTALLED.get_or_init(|| install("python-client-env"))
}

#[test]
fn a_generated_python_client_drives_the_whole_lifecycle() {
    let pyenv = pyenv();
    if let Err(output) = ensure_generator() {
        panic!(
            "`bash scripts/python-client-env` could not install openapi-python-client into {}; \
             it needs python3 3.11 or later and PyPI (or a mirror in PIP_INDEX_URL):\n{output}",
            pyenv.display()
        );
    }
    let bin = pyenv.join("bin");
    let generator = bin.join("openapi-python-client");
    assert!(
        generator.is_file(),
        "scripts/python-client-env ran but left no generator at {}",
        generator.display()
    );
    let root = root();
    let dir = tempfile::tempdir().expect("temp dir");

    // The generator runs ruff as a post-hook, found on PATH.
    let path = path_with(&bin);
    let mut generate = Command::new(&generator);
    generate
        .args(["generate", "--meta", "none", "--fail-on-warning", "--path"])
        .arg(root.join("openapi/openapi.json"))
        .arg("--output-path")
        .arg(dir.path().join("keyledger_client"))
        .current_dir(dir.path())
        .env("PATH", &path);
    let (generated, output) =
        run_bounded(generate, &dir.path().join("generate.log"), PYTHON_TIMEOUT);
    assert!(
        generated,
        "openapi-python-client rejected openapi/openapi.json or warned about it:\n{output}"
    );

    let master_key = MasterKey::generate().to_base64();
    let server = Binary::spawn(
        &mut serve_command(&dir.path().join("data"), master_key.expose()),
        dir.path(),
    );
    let mut script = Command::new(bin.join("python"));
    script
        .arg(root.join("tests/api/client_lifecycle.py"))
        .args([server.address.as_str(), ADMIN_TOKEN])
        .current_dir(dir.path())
        .env("PYTHONPATH", dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PATH", &path);
    let (passed, output) = run_bounded(script, &dir.path().join("script.log"), PYTHON_TIMEOUT);
    let server_log = std::fs::read_to_string(&server.stderr).unwrap_or_default();
    drop(server);
    assert!(
        passed,
        "the generated client's lifecycle failed:\n{output}\n--- server log ---\n{server_log}"
    );
    assert!(output.contains("ok: the generated client drove the whole lifecycle"));
}
