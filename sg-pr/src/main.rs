//! `sg-pr`: persistent reservations from the command line.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
