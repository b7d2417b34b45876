//! The `ferry` binary. Everything lives in the library; this only hands
//! over to its command line (`ferry::cli`).

fn main() -> std::process::ExitCode {
    ferry::cli::main()
}
