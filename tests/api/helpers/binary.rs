//! The real `keyledger` binary as a child process, for the tests that need what only a process
//! has: its log output, SIGKILL, the CLI environment.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ADMIN_TOKEN;

/// The line the binary prints on stdout once it listens, followed by its address.
const LISTENING: &str = "keyledger listening on ";

/// How long the binary may take to listen, however loaded the machine is.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);

/// The real binary, set to serve on a free loopback port over `data_dir` with the test admin
/// token and `master_key` (base64), and nothing inherited from the shell that changes behaviour.
/// [`Binary::spawn`] starts it.
pub fn serve_command(data_dir: &Path, master_key: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyledger"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("KEYLEDGER_MASTER_KEY", master_key)
        .env("RUST_LOG", "warn")
        .env_remove("KEYLEDGER_UNSAFE_NO_SYNC")
        .env_remove("KEYLEDGER_OPEN_SIGNUP")
        .env_remove("KEYLEDGER_LOG_FORMAT")
        .env_remove("KEYLEDGER_ALLOW_PRIVATE_URLS")
        .stdin(Stdio::null());
    // Probes the binary makes (the contract test calls `test`) go nowhere: a loopback address,
    // which the outbound policy refuses at once, so no test reaches a real provider.
    for provider in keyledger::domain::providers::catalog() {
        let name = format!("KEYLEDGER_{}_BASE_URL", provider.id.to_ascii_uppercase());
        command.env(name, "http://127.0.0.1:9");
    }
    command.env("KEYLEDGER_VERTEX_TOKEN_URL", "http://127.0.0.1:9/token");
    command
}

/// A running binary, its stdout and stderr captured to files, killed when dropped.
pub struct Binary {
    child: Child,
    /// `http://127.0.0.1:<port>`, as the binary printed it.
    pub address: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Binary {
    /// Starts `command` (from [`serve_command`]) with its output in `stdout.log` and `stderr.log`
    /// under `logs`, and waits until it listens.
    pub fn spawn(command: &mut Command, logs: &Path) -> Self {
        let stdout = logs.join("stdout.log");
        let stderr = logs.join("stderr.log");
        let child = command
            .stdout(File::create(&stdout).expect("stdout log"))
            .stderr(File::create(&stderr).expect("stderr log"))
            .spawn()
            .expect("start keyledger");
        let mut binary = Self {
            child,
            address: String::new(),
            stdout,
            stderr,
        };
        binary.address = binary.wait_for_address();
        binary
    }

    /// Polls stdout for the `LISTENING` line. Rust's stdout is line-buffered even into a file,
    /// so the line is there as soon as it is printed.
    fn wait_for_address(&mut self) -> String {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if let Some(line) = out.lines().find(|l| l.starts_with(LISTENING)) {
                return line[LISTENING.len()..].trim().to_owned();
            }
            if let Some(status) = self.child.try_wait().expect("wait for keyledger") {
                panic!(
                    "keyledger exited with {status}: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "keyledger did not listen within {LISTEN_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (after a signal sent through [`Binary::id`]).
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }

    /// Sends SIGKILL (no shutdown hook, no final flush) and reaps the process.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
