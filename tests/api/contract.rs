//! schemathesis (from PyPI, installed into `target/schemathesis-env` by
//! `scripts/schemathesis-env`, which this test runs itself, so a fresh clone needs no step before
//! `cargo test`) tests the real binary, on a real loopback port, against `openapi/openapi.json`
//! as the server serves it: every check it has (`--checks all`: status codes, content types,
//! headers and bodies as documented, schema-valid requests accepted and schema-invalid ones
//! refused, 405s with `Allow`, authentication enforced, links followed through the lifecycle),
//! in every phase (examples, coverage, fuzzing, stateful), with a fixed seed and a bounded
//! number of examples per operation so that a run is repeatable and takes well under two
//! minutes. The configuration (`contract/schemathesis.toml`) gives the tokens; the hooks
//! (`contract/hooks.py`) drop only the refusals no schema can foresee (see
//! docs/adr/0018-the-contract-states-what-the-server-checks.md), each counted in the output.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyledger::crypto::MasterKey;

use crate::helpers::python::{install, path_with, root, run_bounded, venv};
use crate::helpers::{ADMIN_TOKEN, Binary, serve_command};

/// Examples per operation and phase: enough to reach every rule, few enough to stay quick.
const MAX_EXAMPLES: &str = "15";

/// schemathesis's budget for the whole run, in seconds (see the command below).
const MAX_TIME: &str = "300";

/// The run is repeatable: the same seed draws the same requests.
const SEED: &str = "20261123";

/// Bounds the whole schemathesis process: its own budget ([`MAX_TIME`]) plus loading the schema,
/// the examples and the report, with room for a busy machine, while still ending a stuck run.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// The virtualenv `scripts/schemathesis-env` installs schemathesis into.
fn schemathesis_env() -> PathBuf {
    venv("KEYLEDGER_SCHEMATHESIS_ENV", "target/schemathesis-env")
}

fn ensure_schemathesis() -> &'static Result<String, String> {
    static INSTALLED: OnceLock<Result<String, String>> = OnceLock::new();
    INSTALLED.get_or_init(|| install("schemathesis-env"))
}

/// Creates an account with the admin token; answers its first key's token.
fn account_token(address: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{address}/v1/accounts"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"email": "contract@example.com"}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("create an account");
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.expect("json");
        body["api_key"].as_str().expect("api_key").to_owned()
    })
}

/// The number in schemathesis's summary line `Test cases: N generated, …`.
fn cases_generated(output: &str) -> Option<u64> {
    let after = output.split("Test cases:").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn schemathesis_finds_the_server_keeping_its_contract() {
    let venv = schemathesis_env();
    if let Err(output) = ensure_schemathesis() {
        panic!(
            "`bash scripts/schemathesis-env` could not install schemathesis into {}; it needs \
             python3 3.11 or later and PyPI (or a mirror in PIP_INDEX_URL):\n{output}",
            venv.display()
        );
    }
    let bin = venv.join("bin");
    let st = bin.join("st");
    assert!(
        st.is_file(),
        "scripts/schemathesis-env left no {}",
        st.display()
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let master_key = MasterKey::generate().to_base64();
    let server = Binary::spawn(
        &mut serve_command(&dir.path().join("data"), master_key.expose()),
        dir.path(),
    );
    let token = account_token(&server.address);
    let contract = root().join("tests/api/contract");
    let dropped = dir.path().join("dropped.log");

    let mut run = Command::new(&st);
    run.arg("--config-file")
        .arg(contract.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/openapi.json", server.address))
        .args(["--url", &server.address])
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        // Examples found by earlier runs would make this one draw differently.
        .args(["--generation-database", "none"])
        .args(["--workers", "2"])
        // schemathesis's own budget for the run, well inside RUN_TIMEOUT: each operation gets its
        // share of it, and the coverage phase stops enumerating an operation's cases when its
        // share is spent. Without one, the negative cases of a body with nested oneOf/allOf
        // (register) were enumerated without end on some runs (4 GB and still growing after
        // 10 minutes). Fuzzing and stateful testing fill what the budget leaves.
        .args(["--max-time", MAX_TIME])
        .arg("--no-color")
        // Reports and caches go to the temp dir, not the repository.
        .current_dir(dir.path())
        .env("PATH", path_with(&bin))
        .env("SCHEMATHESIS_HOOKS", contract.join("hooks.py"))
        .env("KEYLEDGER_TOKEN", &token)
        .env("KEYLEDGER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYLEDGER_CONTRACT_DROPPED", &dropped)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let command = format!("{run:?}");
    let started = Instant::now();
    let (passed, output) = run_bounded(run, &dir.path().join("schemathesis.log"), RUN_TIMEOUT);
    let took = started.elapsed();
    let server_log = std::fs::read_to_string(&server.stderr).unwrap_or_default();
    drop(server);

    let mut reasons = BTreeMap::<String, usize>::new();
    for line in std::fs::read_to_string(&dropped)
        .unwrap_or_default()
        .lines()
    {
        *reasons.entry(line.to_owned()).or_default() += 1;
    }
    let summary: String = reasons
        .iter()
        .map(|(reason, n)| format!("\n  {n:>4} {reason}"))
        .collect();
    let cases = cases_generated(&output);
    // What the run did, for the test's output (`cargo test contract -- --nocapture`).
    println!(
        "{command}\nschemathesis: {} cases in {took:.1?}, {}; dropped as limits of a schema:{}",
        cases.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        if passed { "no failure" } else { "FAILED" },
        if summary.is_empty() {
            " none".to_owned()
        } else {
            summary
        },
    );
    assert!(
        passed,
        "schemathesis found the server breaking its contract:\n{output}\n--- server log ---\n{server_log}"
    );
    assert!(
        cases.is_some_and(|n| n > 500),
        "schemathesis ran too few cases to mean anything:\n{output}"
    );
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            output.contains(&format!("✅ {phase}")),
            "the {phase} phase did not pass:\n{output}"
        );
    }
    assert!(
        !server_log.contains("panicked"),
        "the server panicked:\n{server_log}"
    );
}
