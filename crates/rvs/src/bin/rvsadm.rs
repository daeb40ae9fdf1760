//! `rvsadm`: ipvsadm's commands and tables against a running rvs.

#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_else(|| "rvsadm".to_owned());
    let stdin = io::stdin();
    let stdout = io::stdout();
    let stderr = io::stderr();
    let mut out = io::BufWriter::new(stdout.lock());
    let code = rvs::ipvsadm::main(
        &program,
        argv.collect(),
        &mut stdin.lock(),
        &mut out,
        &mut stderr.lock(),
    );
    let _ = out.flush();
    ExitCode::from(code)
}
