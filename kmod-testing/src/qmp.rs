//! A minimal client of a guest's QEMU monitor (QMP, JSON over a Unix socket).
//!
//! Every call opens its own connection: greeting, `qmp_capabilities`, the command, its answer.
//! Asynchronous events that arrive meanwhile are skipped. QEMU serves one monitor client at a
//! time; [`crate::Guest`] serializes its calls.

use crate::error::{Error, IoContext, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one monitor command may take (drive_add logs in to an iSCSI target synchronously).
const QMP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `command` (`{"execute": ..., "arguments": ...}`) on the monitor at `socket` and returns
/// its `return` value; a QMP `error` answer is an [`Error::Setup`] with its class and text.
pub(crate) fn execute(guest: &str, socket: &Path, command: &Value) -> Result<Value> {
    let what = || format!("guest {guest}: QMP socket {}", socket.display());
    let stream = UnixStream::connect(socket).ctx(what)?;
    stream.set_read_timeout(Some(QMP_TIMEOUT)).ctx(what)?;
    let mut writer = stream.try_clone().ctx(what)?;
    let mut reader = BufReader::new(stream);
    let deadline = Instant::now() + QMP_TIMEOUT;
    let next = |reader: &mut BufReader<UnixStream>| -> Result<Value> {
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).ctx(what)?;
            if n == 0 {
                return Err(Error::Setup(format!(
                    "guest {guest}: QEMU closed its monitor"
                )));
            }
            let v: Value = serde_json::from_str(line.trim()).map_err(|e| {
                Error::Setup(format!("guest {guest}: QMP sent non-JSON ({e}): {line}"))
            })?;
            // Events can come at any time; the greeting is {"QMP": ...}.
            if v.get("event").is_none() || Instant::now() > deadline {
                return Ok(v);
            }
        }
    };
    let greeting = next(&mut reader)?;
    if greeting.get("QMP").is_none() {
        return Err(Error::Setup(format!(
            "guest {guest}: unexpected QMP greeting {greeting}"
        )));
    }
    let mut call = |cmd: &Value| -> Result<Value> {
        writer.write_all(format!("{cmd}\n").as_bytes()).ctx(what)?;
        let answer = next(&mut reader)?;
        answer.get("return").cloned().ok_or_else(|| {
            Error::Setup(format!(
                "guest {guest}: QMP {cmd} failed: {}",
                answer.get("error").unwrap_or(&answer)
            ))
        })
    };
    call(&json!({"execute": "qmp_capabilities"}))?;
    call(command)
}
