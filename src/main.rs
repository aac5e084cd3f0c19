//! The `protond` binary: a thin shell over the library.

fn main() -> std::process::ExitCode {
    protond::cli::main()
}
