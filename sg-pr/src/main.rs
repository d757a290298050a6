//! `sg-pr`: SCSI-3 persistent reservations from the command line. See `sg-pr --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
