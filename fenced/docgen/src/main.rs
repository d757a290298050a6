//! `fenced-docgen OUT`: writes the man pages and shell completions under OUT (see the library).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: fenced-docgen OUT_DIR   (writes OUT_DIR/man and OUT_DIR/completions)");
        return ExitCode::from(2);
    };
    let out = PathBuf::from(out);
    match fenced_docgen::generate(&out) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fenced-docgen: error: writing under {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
