//! `rvsadm`: ipvsadm's commands and tables against a running rvs.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    rvs::ipvsadm::main_from_env()
}
