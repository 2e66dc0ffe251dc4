//! Running the host's packet filter tools (`ipset`, `iptables-*`) as child processes.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::ipvs::backend::BackendError;

/// Runs the host's packet filter tools (`ipset`, `iptables-*`). [`ProcessRunner`] starts real
/// processes; tests use a scripted one.
pub trait CommandRunner: Send {
    /// Runs `program args...` with `stdin` written to its standard input; returns its standard
    /// output, or an error naming the command line with its exit status and standard error.
    fn run(
        &mut self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, BackendError>;
}

/// Runs commands as child processes of this one.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessRunner;

impl CommandRunner for ProcessRunner {
    fn run(
        &mut self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, BackendError> {
        run_cmd(program, args, stdin)
    }
}

fn run_cmd(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, BackendError> {
    let line = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BackendError::Command {
            command: line.clone(),
            reason: e.to_string(),
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| BackendError::Command {
                command: line.clone(),
                reason: e.to_string(),
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| BackendError::Command {
            command: line.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BackendError::Command {
            command: line,
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
