//! Running the real `repayd` binary: child processes that die with the test, free ports.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A child process killed when the test ends, whatever happens.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGKILL: no chance to clean up, like a crash.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process {pid} did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn repayd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_repayd"));
    c.current_dir(dir)
        .args(args)
        .env_remove("REPAYD_DATABASE_URL");
    c
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The simulator server's journal of applied debits.
pub async fn sim_journal(
    port: u16,
    name: &str,
    secret: &str,
) -> Vec<repayd::adapters::channel::SimDebit> {
    let cfg = repayd::domain::channel::builtin_channels()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap();
    let ch = repayd::adapters::channel::HttpChannel::new(
        &cfg,
        format!("http://127.0.0.1:{port}"),
        repayd::domain::secret::Secret::new(secret),
    )
    .unwrap();
    ch.journal().await.unwrap()
}

/// A policy for daemon tests: no quiet hours (so tests do not depend on the time of day),
/// two due-date slots, a two-step ladder, notices by `channels` (e.g. `"sms", "email"`).
pub fn daemon_test_policy(name: &str, channels: &str) -> String {
    format!(
        r#"
name = "{name}"
version = 1
[notices]
before_due = [{{ days = 1, at = "10:00" }}]
channels = [{channels}]
on_result = true
overdue_every_days = 0
quiet_hours = []
daily_cap = 10
[due]
at = ["08:00", "12:00"]
[ladder]
steps = [1, 0.5]
min_amount = "10.00"
on_codes = ["INSUFFICIENT_BALANCE"]
within_slot = true
"#
    )
}

/// The log without its colour codes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
