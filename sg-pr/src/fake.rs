//! A scripted [`ScsiTransport`] for unit tests of policy code (here and in the daemon).

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::Receiver;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::transport::{CommandOutcome, DataTransfer, ScsiStatus, ScsiTransport};

/// One scripted answer.
#[derive(Debug)]
pub enum Step {
    /// Answer with `outcome`, copying `data` into a data-in buffer (resid set accordingly).
    Reply {
        /// Status, sense, host/driver status.
        outcome: CommandOutcome,
        /// Bytes the "device" sends.
        data: Vec<u8>,
    },
    /// Fail the ioctl itself with this errno.
    Errno(i32),
    /// Block until the sender sends or is dropped (a hung device), then answer GOOD.
    Block(Receiver<()>),
}

impl Step {
    /// GOOD with no data.
    pub fn good() -> Step {
        Step::Reply {
            outcome: CommandOutcome::good(),
            data: Vec::new(),
        }
    }

    /// GOOD with data-in bytes.
    pub fn data(data: Vec<u8>) -> Step {
        Step::Reply {
            outcome: CommandOutcome::good(),
            data,
        }
    }

    /// A bare status (BUSY, RESERVATION CONFLICT...).
    pub fn status(status: ScsiStatus) -> Step {
        Step::Reply {
            outcome: CommandOutcome::with_status(status),
            data: Vec::new(),
        }
    }

    /// CHECK CONDITION with fixed-format sense `key/asc/ascq`.
    pub fn check(key: u8, asc: u8, ascq: u8) -> Step {
        let mut sense = vec![0u8; 18];
        sense[0] = 0x70;
        sense[2] = key;
        sense[7] = 10;
        sense[12] = asc;
        sense[13] = ascq;
        Step::Reply {
            outcome: CommandOutcome::check_condition(sense),
            data: Vec::new(),
        }
    }
}

/// A command the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCommand {
    /// The CDB.
    pub cdb: Vec<u8>,
    /// Data-out bytes (PR OUT parameter list), empty otherwise.
    pub data_out: Vec<u8>,
}

/// Answers commands from a script, in order, and records what it was sent.
#[derive(Debug)]
pub struct ScriptedTransport {
    name: String,
    script: Mutex<VecDeque<Step>>,
    sent: Mutex<Vec<SentCommand>>,
}

impl ScriptedTransport {
    /// A transport named `name` that will answer with `steps`.
    pub fn new(name: &str, steps: impl IntoIterator<Item = Step>) -> Self {
        ScriptedTransport {
            name: name.to_string(),
            script: Mutex::new(steps.into_iter().collect()),
            sent: Mutex::new(Vec::new()),
        }
    }

    /// Commands received so far.
    pub fn sent(&self) -> Vec<SentCommand> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Steps not consumed yet.
    pub fn remaining(&self) -> usize {
        self.script.lock().map(|s| s.len()).unwrap_or(0)
    }
}

impl ScsiTransport for ScriptedTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn execute(
        &self,
        cdb: &[u8],
        data: DataTransfer<'_>,
        _timeout: Duration,
    ) -> Result<CommandOutcome> {
        let data_out = match &data {
            DataTransfer::ToDevice(b) => b.to_vec(),
            _ => Vec::new(),
        };
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(SentCommand {
                cdb: cdb.to_vec(),
                data_out,
            });
        }
        let step = self.script.lock().ok().and_then(|mut s| s.pop_front());
        let io_err = |errno: i32| Error::Io {
            device: self.name.clone(),
            command: "SG_IO",
            source: io::Error::from_raw_os_error(errno),
        };
        match step {
            None => Err(io_err(libc::ENODATA)),
            Some(Step::Errno(errno)) => Err(io_err(errno)),
            Some(Step::Block(rx)) => {
                let _ = rx.recv();
                Ok(CommandOutcome::good())
            }
            Some(Step::Reply {
                mut outcome,
                data: reply,
            }) => {
                if let DataTransfer::FromDevice(buf) = data {
                    let n = reply.len().min(buf.len());
                    buf[..n].copy_from_slice(&reply[..n]);
                    outcome.resid = buf.len() - n;
                }
                Ok(outcome)
            }
        }
    }
}
